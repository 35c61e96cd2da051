"""chat_service's settings: the shared ones plus its own defaults."""

from __future__ import annotations

import os
from collections.abc import Mapping

from chat_service.providers.context import parse_client_roles
from chat_service.providers.dify import parse_inputs
from shared.config import SharedConfig

FALSE_WORDS = ("0", "false", "no", "off")


class Config(SharedConfig):
    SERVICE_NAME = "chat_service"
    SUCCESS_MESSAGE = "success"

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        super().__init__(environ)
        env = environ.get
        # The AI provider (chat_service.providers): `echo` (offline default), `dify` or `openai`.
        self.AI_PROVIDER = env("AI_PROVIDER", "echo").strip().lower() or "echo"
        self.DIFY_API_URL = env("DIFY_API_URL", "https://api.dify.ai/v1")
        self.DIFY_API_KEY = env("DIFY_API_KEY", "")
        # Dify's `inputs` for every turn (a JSON object), under a session's own; bad JSON fails startup.
        self.DIFY_INPUTS = parse_inputs(env("DIFY_INPUTS", "{}"), "DIFY_INPUTS")
        # How long Dify's `GET /parameters` (input form, opening statement, ...) is reused.
        self.DIFY_PARAMETERS_CACHE_SECONDS = float(env("DIFY_PARAMETERS_CACHE_SECONDS", "300"))
        self.OPENAI_BASE_URL = env("OPENAI_BASE_URL", "https://api.openai.com/v1")
        self.OPENAI_API_KEY = env("OPENAI_API_KEY", "")
        self.OPENAI_MODEL = env("OPENAI_MODEL", "gpt-4o-mini")
        # The model's context is the server's: its own system prompt (OpenAI-compatible providers only),
        # and the roles of client-posted messages sent as posted (others are left out; `user` always).
        self.AI_SYSTEM_PROMPT = env("AI_SYSTEM_PROMPT", "").strip()
        self.AI_CLIENT_ROLES = parse_client_roles(env("AI_CLIENT_ROLES", "user"))
        # A reply's length (OpenAI-compatible `max_tokens`: without it a model writes until its window is
        # full) and the prompt's, estimated (providers/context.py): keep both within the model's window.
        self.OPENAI_MAX_TOKENS = int(env("OPENAI_MAX_TOKENS", "1024"))
        self.AI_CONTEXT_TOKENS = int(env("AI_CONTEXT_TOKENS", "6000"))
        # After a completed reply, a session still titled 新会话 (by nobody's choice) gets a generated title.
        self.TITLE_GENERATION = env("TITLE_GENERATION", "true").strip().lower() not in FALSE_WORDS
        # With Dify, follow-up questions after a completed reply (a `suggestions` frame).
        self.SUGGESTED_QUESTIONS = env("SUGGESTED_QUESTIONS", "true").strip().lower() not in FALSE_WORDS
        self.ECHO_DELAY_SECONDS = float(env("ECHO_DELAY_SECONDS", "0.05"))
        # Read timeout well above Dify's 10 s keep-alive pings; it bounds a silent stream, not a turn.
        self.PROVIDER_CONNECT_TIMEOUT_SECONDS = float(env("PROVIDER_CONNECT_TIMEOUT_SECONDS", "5"))
        self.PROVIDER_READ_TIMEOUT_SECONDS = float(env("PROVIDER_READ_TIMEOUT_SECONDS", "60"))
        # The longest line of a provider's stream: past it the turn fails (5000, `bad_response`).
        self.PROVIDER_MAX_LINE_BYTES = int(env("PROVIDER_MAX_LINE_BYTES", str(1024 * 1024)))
        # Before a reply's first piece: at most this many calls, waits doubling from base up to cap.
        self.PROVIDER_RETRY_TRIES = int(env("PROVIDER_RETRY_TRIES", "3"))
        self.PROVIDER_RETRY_BASE_SECONDS = float(env("PROVIDER_RETRY_BASE_SECONDS", "0.5"))
        self.PROVIDER_RETRY_CAP_SECONDS = float(env("PROVIDER_RETRY_CAP_SECONDS", "8"))
        # Browser origins that may open sockets; empty: the request's own host only; "*": any.
        # The reference chat page at /chat (chat_service.page).
        self.CHAT_PAGE = env("CHAT_PAGE", "true").strip().lower() not in FALSE_WORDS
        # Development only: the page may mint a token for any user id it is given (never in production).
        self.DEV_TOKENS = env("DEV_TOKENS", "false").strip().lower() not in FALSE_WORDS
        # Where the page calls conversation_service (pins); empty: the page's own origin (the gateway).
        self.CHAT_PAGE_CONVERSATION_URL = env("CHAT_PAGE_CONVERSATION_URL", "").strip().rstrip("/")
        self.WS_ALLOWED_ORIGINS = [o.strip() for o in env("WS_ALLOWED_ORIGINS", "").split(",") if o.strip()]
        self.SOCK_SERVER_OPTIONS = {
            # Below every proxy's idle timeout (nginx: 60 s), so idle sockets stay open.
            "ping_interval": float(env("WS_PING_INTERVAL", "25")),
            # A 32,000-character message, even \uXXXX-escaped, fits; larger frames close with 1009.
            "max_message_size": int(env("WS_MAX_MESSAGE_SIZE", str(512 * 1024))),
            "subprotocols": ["bearer"],
        }
        # A socket's outgoing queue: a client this far behind is closed with 1013 (it is not reading).
        self.WS_QUEUE_MAX_FRAMES = int(env("WS_QUEUE_MAX_FRAMES", "1000"))
        self.WS_QUEUE_MAX_BYTES = int(env("WS_QUEUE_MAX_BYTES", str(1024 * 1024)))
        # Per-user limits (README, "Limits"): rates in the `limits` notation ("20/minute", "off"),
        # counts of things open at once (0: no limit).
        self.LIMIT_SESSIONS_CREATED = env("LIMIT_SESSIONS_CREATED", "60/minute")
        self.LIMIT_TURNS = env("LIMIT_TURNS", "20/minute")
        self.LIMIT_TOKENS = env("LIMIT_TOKENS", "off")  # provider tokens, from the usage replies report
        self.LIMIT_TURNS_IN_FLIGHT = int(env("LIMIT_TURNS_IN_FLIGHT", "3"))
        self.LIMIT_SOCKETS = int(env("LIMIT_SOCKETS", "20"))
        # A turn's Redis claim lives this long unless its instance's heartbeat refreshes it (every third).
        self.TURN_CLAIM_TTL_SECONDS = float(env("TURN_CLAIM_TTL_SECONDS", "10"))
        # Storing a finished reply (or a user message) is retried this long while the database fails.
        self.STORE_RETRY_SECONDS = float(env("STORE_RETRY_SECONDS", "10"))
        # Each Redis call's connect and read timeout: a silent Redis is left for in-process delivery then.
        self.REDIS_TIMEOUT_SECONDS = float(env("REDIS_TIMEOUT_SECONDS", "1"))
        # The outbox worker that mirrors sessions to conversation_service (chat_service.sync): on in
        # every server process; polls every interval; a failed delivery is retried after 0.5 s, 1 s, ...
        # up to the cap.
        self.OUTBOX_WORKER = env("OUTBOX_WORKER", "true").strip().lower() not in ("0", "false", "no", "off")
        self.OUTBOX_INTERVAL_SECONDS = float(env("OUTBOX_INTERVAL_SECONDS", "0.5"))
        self.OUTBOX_MAX_BACKOFF_SECONDS = float(env("OUTBOX_MAX_BACKOFF_SECONDS", "10"))
