/*
 * The reference chat page of chat_service: plain DOM code, no framework, no build step.
 *
 * It uses only the documented protocol (README "Live chat", docs/chat-page.md):
 *   REST   GET  /aichat/getsessionlist/<user>   the chat list        POST   /aichat/createsession
 *          GET  /aichat/sessions/<id>           a chat, its usage    PATCH  /aichat/sessions/<id>
 *          DELETE /aichat/deletesession/<id>                         PUT    /api/chat/messages/<id>/feedback
 *          GET  {conversation}/api/ai/conversation/list              PUT    {conversation}/api/ai/conversation/<id>/pinned
 *   socket /ws/<id>, the token as the subprotocol pair ["bearer", token] (never in the URL)
 *          client frames: message, stop, regenerate, edit, ping
 *          server frames: user_message, delta, turn_state, assistant_message, message_updated,
 *                         message_deleted, session_updated, session_deleted, suggestions,
 *                         conversation_reset, error, pong
 * Every failure, REST or socket, is shown in the error banner with its code, message, detail and traceId.
 */
"use strict";

// --- settings the server rendered into <body>, and the page's state ------------------------------------

const settings = {
  devTokens: document.body.dataset.devTokens === "true",
  // Where conversation_service answers (pins); empty: this page's own origin (the gateway).
  conversationUrl: document.body.dataset.conversationUrl || "",
};

const state = {
  token: localStorage.getItem("chat.token") || "",
  userId: null,
  sessions: [],            // the view route's session objects, newest activity first
  records: new Map(),      // chat session id -> its conversation_service record (pins)
  current: localStorage.getItem("chat.session") || null,
  socket: null,
  reconnectDelay: 1000,
  reconnectTimer: null,
  backlog: null,           // frames that arrived while the chat's history was loading
  streaming: null,         // {turnId, element} of the reply being generated
};

const $ = (id) => document.getElementById(id);

// --- errors: one banner for every failure -------------------------------------------------------------

class ApiError extends Error {
  constructor(where, envelope, status) {
    super(describe(where, envelope, status));
    this.envelope = envelope;
  }
}

/** "where: [code message] detail (traceId ...)" from an envelope (REST answer or `error` frame). */
function describe(where, envelope, status) {
  if (!envelope || typeof envelope !== "object") return `${where}: HTTP ${status}, not an envelope`;
  const data = envelope.data || {};
  const parts = [`${where}: [${envelope.code} ${envelope.message}]`];
  if (data.detail) parts.push(data.detail);
  if (data.errors) parts.push(JSON.stringify(data.errors));
  if (data.reason) parts.push(`reason: ${data.reason}`);
  if (data.retry_after !== undefined) parts.push(`retry after ${data.retry_after} s`);
  if (envelope.traceId) parts.push(`(traceId ${envelope.traceId})`);
  return parts.join(" ");
}

function showError(text) {
  $("error-text").textContent = text;
  $("error-banner").hidden = false;
}

function showNotice(text) {
  $("notice").textContent = text;
  $("notice").hidden = !text;
}

/** Run an async action; whatever it throws lands in the banner. */
function guarded(action) {
  return (...args) => Promise.resolve().then(() => action(...args)).catch((error) => showError(error.message));
}

// --- REST: every answer is the envelope ---------------------------------------------------------------

async function api(method, path, body, base = "") {
  const headers = { Authorization: `Bearer ${state.token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(base + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (error) {
    throw new Error(`${method} ${base}${path}: the request failed (${error.message})`);
  }
  let envelope = null;
  try {
    envelope = await response.json();
  } catch (_notJson) {
    // described below as "not an envelope"
  }
  if (!response.ok || !envelope || envelope.code !== 200) {
    throw new ApiError(`${method} ${path}`, envelope, response.status);
  }
  return envelope.data;
}

// --- the token ----------------------------------------------------------------------------------------

/** The token's `sub`, read without checking (the server checks): the view routes name the user. */
function subjectOf(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(payload.padEnd(payload.length + ((4 - (payload.length % 4)) % 4), "=")));
    return { sub: String(claims.sub), exp: claims.exp };
  } catch (_malformed) {
    return null;
  }
}

async function useToken(token) {
  const claims = subjectOf(token);
  if (!claims) throw new Error("token: not a JWT (three base64url parts)");
  state.token = token;
  state.userId = claims.sub;
  localStorage.setItem("chat.token", token);
  $("token-input").value = token;
  const expires = claims.exp ? new Date(claims.exp * 1000).toLocaleTimeString() : "never";
  $("who").textContent = `user ${claims.sub} · token expires ${expires}`;
  await refreshSessions();
  if (state.current) await selectSession(state.current);
}

async function mintToken(userId) {
  const data = await api("POST", "/chat/dev-token", { user_id: userId });
  await useToken(data.token);
}

// --- the chat list, and pins from conversation_service ------------------------------------------------

async function refreshSessions() {
  const page = await api("GET", `/aichat/getsessionlist/${encodeURIComponent(state.userId)}?page=1&page_size=100`);
  state.sessions = page.items;
  await refreshRecords();
  renderSessions();
}

/** Each chat's record (pinned or not). A failure disables pinning; the button's tooltip says why. */
async function refreshRecords() {
  try {
    const records = await api("GET", "/api/ai/conversation/list", undefined, settings.conversationUrl);
    state.records = new Map(records.filter((r) => r.chatSessionId).map((r) => [r.chatSessionId, r]));
    $("pin-session").disabled = false;
    $("pin-session").title = "";
  } catch (error) {
    $("pin-session").disabled = true;
    $("pin-session").title = `pins unavailable: ${error.message}`;
  }
}

function renderSessions() {
  const pinned = (s) => (state.records.get(s.session_id) || {}).isPinned ? 1 : 0;
  const ordered = [...state.sessions].sort((a, b) => pinned(b) - pinned(a)); // stable: keeps the server's order
  const list = $("session-list");
  list.replaceChildren(
    ...ordered.map((session) => {
      const item = document.createElement("li");
      item.dataset.testid = "session-item";
      item.dataset.sessionId = session.session_id;
      item.classList.toggle("current", session.session_id === state.current);
      item.append(
        span("pin", pinned(session) ? "pinned" : "", "session-pinned"),
        span("title", session.title, "session-item-title"),
        span("count", String(session.message_count)),
      );
      item.addEventListener("click", guarded(() => selectSession(session.session_id)));
      return item;
    }),
  );
  const record = state.records.get(state.current);
  $("pin-session").textContent = record && record.isPinned ? "Unpin" : "Pin";
}

function span(className, text, testid) {
  const element = document.createElement("span");
  element.className = className;
  element.textContent = text;
  if (testid) element.dataset.testid = testid;
  return element;
}

// --- one chat: its history over REST, then its frames over the socket ---------------------------------

async function selectSession(sessionId) {
  state.current = sessionId;
  localStorage.setItem("chat.session", sessionId);
  state.streaming = null;
  $("messages").replaceChildren();
  $("suggestions").replaceChildren();
  showNotice("");
  renderSessions();
  // Subscribe first and hold the frames, so nothing between the history and the socket is missed.
  state.backlog = [];
  connect(sessionId);
  let view;
  try {
    view = await api("GET", `/aichat/sessions/${encodeURIComponent(sessionId)}`);
  } catch (error) {
    if (error.envelope && error.envelope.code === 7001) forgetCurrent();
    throw error;
  }
  if (state.current !== sessionId) return;
  $("chat").hidden = false;
  $("empty").hidden = true;
  showSession(view.session);
  view.messages.forEach(upsertMessage);
  const backlog = state.backlog || [];
  state.backlog = null;
  backlog.forEach(onFrame);
}

function showSession(session) {
  $("session-title").value = session.title;
  const usage = session.usage || {};
  const tokens = `${usage.total_tokens || 0} tokens (prompt ${usage.prompt_tokens || 0}, completion ${usage.completion_tokens || 0})`;
  const price = usage.total_price ? ` · ${usage.total_price} ${usage.currency || ""}` : "";
  $("usage").textContent = `usage: ${tokens}${price} · ${session.message_count} messages`;
  const listed = state.sessions.find((s) => s.session_id === session.session_id);
  if (listed) Object.assign(listed, session);
  renderSessions();
}

function forgetCurrent() {
  closeSocket();
  state.current = null;
  localStorage.removeItem("chat.session");
  $("chat").hidden = true;
  $("empty").hidden = false;
  renderSessions();
}

// --- the socket ---------------------------------------------------------------------------------------

function connect(sessionId) {
  closeSocket();
  const url = `${location.origin.replace(/^http/, "ws")}/ws/${encodeURIComponent(sessionId)}`;
  // Browsers cannot set headers on a WebSocket: the token travels as the subprotocol pair, and the server
  // answers "bearer". It is never put in the URL (URLs end up in logs).
  const socket = new WebSocket(url, ["bearer", state.token]);
  state.socket = socket;
  setSocketState("connecting");
  socket.addEventListener("open", () => {
    state.reconnectDelay = 1000;
    setSocketState(`open (${socket.protocol})`, true);
  });
  socket.addEventListener("message", (event) => {
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch (_notJson) {
      showError(`socket: a frame that is not JSON: ${String(event.data).slice(0, 200)}`);
      return;
    }
    if (state.backlog) state.backlog.push(frame);
    else onFrame(frame);
  });
  socket.addEventListener("close", (event) => {
    if (state.socket !== socket) return; // replaced by another chat's socket
    state.socket = null;
    setSocketState(`closed (${event.code})`);
    // 4400-4499: refused (bad token, not yours, unknown chat, too many sockets): the error frame said why.
    // 1000: the chat was deleted. Anything else (a restart, the network): try again, backing off.
    if (event.code >= 4400 && event.code < 4500) return;
    if (event.code === 1000 || state.current !== sessionId) return;
    state.reconnectTimer = setTimeout(() => connect(sessionId), state.reconnectDelay);
    state.reconnectDelay = Math.min(state.reconnectDelay * 2, 10000);
  });
}

function closeSocket() {
  clearTimeout(state.reconnectTimer);
  const socket = state.socket;
  state.socket = null;
  if (socket) socket.close(1000, "switching chats");
}

function setSocketState(text, open = false) {
  $("socket-state").textContent = `socket: ${text}`;
  $("socket-state").classList.toggle("open", open);
}

function send(frame) {
  if (!state.socket || state.socket.readyState !== WebSocket.OPEN) {
    throw new Error("socket: not connected to this chat (pick a chat, check the token)");
  }
  state.socket.send(JSON.stringify(frame));
}

// --- server frames ------------------------------------------------------------------------------------

const handlers = {
  user_message: (data) => {
    upsertMessage(data);
    refreshCurrent(); // its count
  },
  // The reply so far, sent first to a socket that opens while a reply is being generated.
  turn_state: (data) => {
    streamingBubble(data.turn_id).querySelector(".text").textContent = data.content;
  },
  delta: (data) => {
    const text = streamingBubble(data.turn_id).querySelector(".text");
    text.textContent = data.replace ? data.content : text.textContent + data.content;
    scrollDown();
  },
  assistant_message: (data) => {
    const bubble = state.streaming && state.streaming.element;
    state.streaming = null;
    if (data.message_id === null) {
      if (bubble) bubble.remove(); // stopped before anything arrived: nothing was stored
    } else {
      if (bubble) bubble.remove();
      upsertMessage(data);
    }
    refreshCurrent();
  },
  message_updated: (data) => upsertMessage(data),
  message_deleted: (data) => {
    const element = messageElement(data.message_id);
    if (element) element.remove();
  },
  session_updated: (data) => showSession(data),
  session_deleted: () => {
    showNotice("This chat was deleted.");
    state.sessions = state.sessions.filter((s) => s.session_id !== state.current);
    forgetCurrent();
  },
  suggestions: (data) => {
    $("suggestions").replaceChildren(
      ...data.questions.map((question) => {
        const button = document.createElement("button");
        button.type = "button";
        button.dataset.testid = "suggestion";
        button.textContent = question;
        button.addEventListener("click", guarded(() => send({ type: "message", content: question })));
        return button;
      }),
    );
  },
  conversation_reset: (data) => {
    showNotice(`The AI's memory of this chat starts over (${data.reason}).`);
  },
  error: (data, frame) => {
    showError(describe("socket", frame));
    // 5000 (the provider failed, or its instance died) and 12001 (storing failed) end the reply in flight.
    if ((frame.code === 5000 || frame.code === 12001) && state.streaming) {
      state.streaming.element.classList.replace("streaming", "failed");
      if (data && data.content) state.streaming.element.querySelector(".text").textContent = data.content;
      state.streaming = null;
    }
  },
  pong: () => {},
};

function onFrame(frame) {
  const handler = handlers[frame.type];
  if (!handler) {
    showError(`socket: a frame of unknown type ${JSON.stringify(frame.type)}`);
    return;
  }
  if (frame.type === "user_message") $("suggestions").replaceChildren(); // a new question: old follow-ups go
  handler(frame.data || {}, frame);
}

/** Usage and counts after a reply: the view route's session object. */
function refreshCurrent() {
  if (!state.current) return;
  const sessionId = state.current;
  guarded(async () => {
    const view = await api("GET", `/aichat/sessions/${encodeURIComponent(sessionId)}`);
    if (state.current === sessionId) showSession(view.session);
  })();
}

// --- messages on screen -------------------------------------------------------------------------------

function messageElement(messageId) {
  return $("messages").querySelector(`li[data-message-id="${messageId}"]`);
}

/** The bubble of the reply being generated in turn `turnId` (created on its first piece). */
function streamingBubble(turnId) {
  if (!state.streaming || state.streaming.turnId !== turnId) {
    if (state.streaming) state.streaming.element.remove();
    const element = document.createElement("li");
    element.className = "assistant streaming";
    element.dataset.testid = "assistant-message";
    element.dataset.turnId = turnId;
    element.append(span("text", "", "message-text"));
    $("messages").append(element);
    state.streaming = { turnId, element };
  }
  return state.streaming.element;
}

/** Show a stored message (new, edited, rated), in message id order. */
function upsertMessage(message) {
  const element = document.createElement("li");
  element.className = message.role;
  element.dataset.testid = `${message.role}-message`;
  element.dataset.messageId = message.message_id;
  element.classList.toggle("stopped", message.stopped === true);
  element.append(span("text", message.content, "message-text"), messageMeta(message));
  const existing = messageElement(message.message_id);
  if (existing) {
    existing.replaceWith(element);
    return;
  }
  const later = [...$("messages").querySelectorAll("li[data-message-id]")].find(
    (li) => Number(li.dataset.messageId) > message.message_id,
  );
  const streaming = state.streaming && state.streaming.element;
  $("messages").insertBefore(element, later || streaming || null);
  scrollDown();
}

function messageMeta(message) {
  const meta = document.createElement("div");
  meta.className = "meta";
  meta.append(span("time", message.created_at ? message.created_at.slice(11, 19) : ""));
  if (message.role === "user") {
    meta.append(button("Edit", "edit-message", () => startEdit(message)));
  }
  if (message.role === "assistant") {
    const rating = message.feedback ? message.feedback.rating : null;
    for (const [value, label] of [["like", "Like"], ["dislike", "Dislike"]]) {
      const rate = button(label, `rate-${value}`, () => rateMessage(message, rating === value ? null : value));
      rate.setAttribute("aria-pressed", String(rating === value));
      rate.title = rating === value ? "withdraw the rating" : value;
      meta.append(rate);
    }
  }
  return meta;
}

function button(label, testid, action) {
  const element = document.createElement("button");
  element.type = "button";
  element.textContent = label;
  element.dataset.testid = testid;
  element.addEventListener("click", guarded(action));
  return element;
}

/** Edit and resend: the server edits the question, deletes what came after it, and answers anew. */
function startEdit(message) {
  const element = messageElement(message.message_id);
  const input = document.createElement("textarea");
  input.dataset.testid = "edit-input";
  input.value = message.content;
  const save = button("Send edit", "edit-save", () => {
    send({ type: "edit", message_id: message.message_id, content: input.value });
  });
  const cancel = button("Cancel", "edit-cancel", () => upsertMessage(message));
  element.replaceChildren(input, save, cancel);
  input.focus();
}

async function rateMessage(message, rating) {
  const updated = await api("PUT", `/api/chat/messages/${message.message_id}/feedback`, { rating });
  upsertMessage(updated); // message_updated follows on every socket of the chat, this one too
}

function scrollDown() {
  const list = $("messages");
  list.scrollTop = list.scrollHeight;
}

// --- the controls -------------------------------------------------------------------------------------

function bind() {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    guarded(useToken)($("token-input").value.trim());
  });
  if (settings.devTokens) {
    $("dev-form").addEventListener("submit", (event) => {
      event.preventDefault();
      guarded(mintToken)($("dev-user-id").value.trim());
    });
  }
  $("error-close").addEventListener("click", () => {
    $("error-banner").hidden = true;
  });
  $("new-session").addEventListener("click", guarded(async () => {
    const session = await api("POST", "/aichat/createsession", {});
    await refreshSessions();
    await selectSession(session.session_id);
  }));
  $("rename-form").addEventListener("submit", (event) => {
    event.preventDefault();
    guarded(async () => {
      await api("PATCH", `/aichat/sessions/${encodeURIComponent(state.current)}`, { new_title: $("session-title").value });
      await refreshSessions();
    })();
  });
  $("delete-session").addEventListener("click", guarded(async () => {
    await api("DELETE", `/aichat/deletesession/${encodeURIComponent(state.current)}`);
    state.sessions = state.sessions.filter((s) => s.session_id !== state.current);
    forgetCurrent();
    showNotice("Chat deleted.");
  }));
  $("pin-session").addEventListener("click", guarded(async () => {
    await refreshRecords();
    const record = state.records.get(state.current);
    if (!record) {
      throw new Error("pin: this chat has no conversation record yet (it follows within a second or two): try again");
    }
    const path = `/api/ai/conversation/${record.id}/pinned?isPinned=${record.isPinned ? 0 : 1}`;
    state.records.set(state.current, await api("PUT", path, undefined, settings.conversationUrl));
    renderSessions();
  }));
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    guarded(() => {
      const content = $("message-input").value;
      send({ type: "message", content });
      $("message-input").value = "";
    })();
  });
  $("message-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("stop").addEventListener("click", guarded(() => send({ type: "stop" })));
  $("regenerate").addEventListener("click", guarded(() => send({ type: "regenerate" })));
}

bind();
if (state.token) guarded(useToken)(state.token);
