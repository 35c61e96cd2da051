"""chat_service's settings: the shared ones plus its own defaults."""

from __future__ import annotations

from chat_service.providers import PROVIDERS
from chat_service.providers.context import parse_client_roles
from chat_service.providers.dify import parse_inputs
from shared.config import SharedConfig
from shared.settings import Settings

PROVIDER_KEYS = {"dify": "DIFY_API_KEY"}


class Config(SharedConfig):
    SERVICE_NAME = "chat_service"
    DATABASE_SETTING = "CHAT_DATABASE_URL"
    SUCCESS_MESSAGE = "success"

    def read(self, s: Settings) -> None:
        super().read(s)
        # The AI provider (chat_service.providers): `echo` (offline default), `dify` or `openai`.
        self.AI_PROVIDER = s.text("AI_PROVIDER", "echo").strip().lower() or "echo"
        if self.AI_PROVIDER not in PROVIDERS:
            s.problem(f"AI_PROVIDER={self.AI_PROVIDER!r} is not one of {', '.join(sorted(PROVIDERS))}")
        self.DIFY_API_URL = s.text("DIFY_API_URL", "https://api.dify.ai/v1")
        self.DIFY_API_KEY = s.text("DIFY_API_KEY")
        # Dify's `inputs` for every turn (a JSON object), under a session's own.
        self.DIFY_INPUTS = s.parse("DIFY_INPUTS", "{}", parse_inputs, {})
        # How long Dify's `GET /parameters` (input form, opening statement, ...) is reused.
        self.DIFY_PARAMETERS_CACHE_SECONDS = s.number("DIFY_PARAMETERS_CACHE_SECONDS", 300, minimum=0)
        self.OPENAI_BASE_URL = s.text("OPENAI_BASE_URL", "https://api.openai.com/v1")
        self.OPENAI_API_KEY = s.text("OPENAI_API_KEY")
        self.OPENAI_MODEL = s.text("OPENAI_MODEL", "gpt-4o-mini")
        # The model's context is the server's: its own system prompt (OpenAI-compatible providers only),
        # and the roles of client-posted messages sent as posted (others are left out; `user` always).
        self.AI_SYSTEM_PROMPT = s.text("AI_SYSTEM_PROMPT").strip()
        self.AI_CLIENT_ROLES = s.parse("AI_CLIENT_ROLES", "user", parse_client_roles, frozenset({"user"}))
        # A reply's length (OpenAI-compatible `max_tokens`: without it a model writes until its window is
        # full) and the prompt's, estimated (providers/context.py): keep both within the model's window.
        self.OPENAI_MAX_TOKENS = s.integer("OPENAI_MAX_TOKENS", 1024, minimum=0)
        self.AI_CONTEXT_TOKENS = s.integer("AI_CONTEXT_TOKENS", 6000, minimum=0)
        # After a completed reply, a session still titled 新会话 (by nobody's choice) gets a generated title.
        self.TITLE_GENERATION = s.flag("TITLE_GENERATION", True)
        # With Dify, follow-up questions after a completed reply (a `suggestions` frame).
        self.SUGGESTED_QUESTIONS = s.flag("SUGGESTED_QUESTIONS", True)
        self.ECHO_DELAY_SECONDS = s.number("ECHO_DELAY_SECONDS", 0.05, minimum=0)
        # Read timeout well above Dify's 10 s keep-alive pings; it bounds a silent stream, not a turn.
        self.PROVIDER_CONNECT_TIMEOUT_SECONDS = s.number("PROVIDER_CONNECT_TIMEOUT_SECONDS", 5, minimum=0)
        self.PROVIDER_READ_TIMEOUT_SECONDS = s.number("PROVIDER_READ_TIMEOUT_SECONDS", 60, minimum=0)
        # The longest line of a provider's stream: past it the turn fails (5000, `bad_response`).
        self.PROVIDER_MAX_LINE_BYTES = s.integer("PROVIDER_MAX_LINE_BYTES", 1024 * 1024, minimum=1)
        # Before a reply's first piece: at most this many calls, waits doubling from base up to cap.
        self.PROVIDER_RETRY_TRIES = s.integer("PROVIDER_RETRY_TRIES", 3, minimum=1)
        self.PROVIDER_RETRY_BASE_SECONDS = s.number("PROVIDER_RETRY_BASE_SECONDS", 0.5, minimum=0)
        self.PROVIDER_RETRY_CAP_SECONDS = s.number("PROVIDER_RETRY_CAP_SECONDS", 8, minimum=0)
        # The largest body POST /api/chat/import takes (an export can be far larger than MAX_CONTENT_LENGTH).
        self.IMPORT_MAX_BYTES = s.integer("IMPORT_MAX_BYTES", 256 * 1024 * 1024, minimum=1)
        # The reference chat page at /chat (chat_service.page).
        self.CHAT_PAGE = s.flag("CHAT_PAGE", True)
        # Development only: the page may mint a token for any user id it is given (never in production).
        self.DEV_TOKENS = s.flag("DEV_TOKENS", False)
        # Where the page calls conversation_service (pins); empty: the page's own origin (the gateway).
        self.CHAT_PAGE_CONVERSATION_URL = s.text("CHAT_PAGE_CONVERSATION_URL").strip().rstrip("/")
        # Browser origins that may open sockets; empty: the request's own host and CORS_ALLOWED_ORIGINS;
        # "*": any.
        self.WS_ALLOWED_ORIGINS = s.items("WS_ALLOWED_ORIGINS")
        self.SOCK_SERVER_OPTIONS = {
            # Below every proxy's idle timeout (nginx: 60 s), so idle sockets stay open.
            "ping_interval": s.number("WS_PING_INTERVAL", 25, minimum=0),
            # A 32,000-character message, even \uXXXX-escaped, fits; larger frames close with 1009.
            "max_message_size": s.integer("WS_MAX_MESSAGE_SIZE", 512 * 1024, minimum=1),
            "subprotocols": ["bearer"],
        }
        # A socket's outgoing queue: a client this far behind is closed with 1013 (it is not reading).
        self.WS_QUEUE_MAX_FRAMES = s.integer("WS_QUEUE_MAX_FRAMES", 1000, minimum=1)
        self.WS_QUEUE_MAX_BYTES = s.integer("WS_QUEUE_MAX_BYTES", 1024 * 1024, minimum=1)
        # Per-user limits (README, "Limits"): rates in the `limits` notation ("20/minute", "off"),
        # counts of things open at once (0: no limit).
        self.LIMIT_SESSIONS_CREATED = s.text("LIMIT_SESSIONS_CREATED", "60/minute")
        self.LIMIT_TURNS = s.text("LIMIT_TURNS", "20/minute")
        self.LIMIT_TOKENS = s.text("LIMIT_TOKENS", "off")  # provider tokens, from the usage replies report
        self.LIMIT_TURNS_IN_FLIGHT = s.integer("LIMIT_TURNS_IN_FLIGHT", 3, minimum=0)
        self.LIMIT_SOCKETS = s.integer("LIMIT_SOCKETS", 20, minimum=0)
        # A turn's Redis claim lives this long unless its instance's heartbeat refreshes it (every third).
        self.TURN_CLAIM_TTL_SECONDS = s.number("TURN_CLAIM_TTL_SECONDS", 10, minimum=0.1)
        # Storing a finished reply (or a user message) is retried this long while the database fails.
        self.STORE_RETRY_SECONDS = s.number("STORE_RETRY_SECONDS", 10, minimum=0)
        # Each Redis call's connect and read timeout: a silent Redis is left for in-process delivery then.
        self.REDIS_TIMEOUT_SECONDS = s.number("REDIS_TIMEOUT_SECONDS", 1, minimum=0)
        # The outbox worker that mirrors sessions to conversation_service (chat_service.sync): on in
        # every server process; polls every interval; a failed delivery is retried after 0.5 s, 1 s, ...
        # up to the cap.
        self.OUTBOX_WORKER = s.flag("OUTBOX_WORKER", True)
        self.OUTBOX_INTERVAL_SECONDS = s.number("OUTBOX_INTERVAL_SECONDS", 0.5, minimum=0.01)
        self.OUTBOX_MAX_BACKOFF_SECONDS = s.number("OUTBOX_MAX_BACKOFF_SECONDS", 10, minimum=0)

    def require_serving(self, s: Settings) -> None:
        super().require_serving(s)
        key = PROVIDER_KEYS.get(self.AI_PROVIDER)
        if key and not getattr(self, key):
            s.problem(f"AI_PROVIDER={self.AI_PROVIDER} needs {key}")
