"""What a model is shown of a conversation: the server's system prompt and the history it trusts.

Messages posted over REST may carry any role, so a stored `system` or `assistant` message may be a
client's words. By default only `user` messages and the replies the server generated (`generated`)
reach a model; a client-posted `system` or `assistant` message is left out of the context (it is still
stored and shown). `AI_CLIENT_ROLES` lets a deployment with trusted clients send those roles as posted.

The context must also fit the model's window: `AI_CONTEXT_TOKENS` bounds the prompt (system prompt,
history and the new message) by an estimate of its tokens, so the history sent is the newest that fits
and the new message is always sent, cut only when it alone is too long. The estimate needs no
tokenizer: a token per four ASCII characters and one per other character (CJK text runs about a
token a character), plus a few per message; it errs long, so the real prompt fits.
"""

from __future__ import annotations

from chat_service.providers.base import TurnRequest

ROLES = ("user", "assistant", "system")
MESSAGE_OVERHEAD_TOKENS = 4  # the chat template's role markers around each message
MIN_QUERY_TOKENS = 16


def estimate_tokens(text: str) -> int:
    """An upper-leaning estimate of `text`'s tokens for any common tokenizer."""
    ascii_chars = sum(1 for char in text if char < "\x80")
    return -(-ascii_chars // 4) + (len(text) - ascii_chars) + MESSAGE_OVERHEAD_TOKENS


def _cut(text: str, tokens: int) -> str:
    """The start of `text` that fits `tokens` by the estimate."""
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if estimate_tokens(text[:middle]) <= tokens:
            low = middle
        else:
            high = middle - 1
    return text[:low]


def parse_client_roles(raw: str | None, name: str = "AI_CLIENT_ROLES") -> frozenset[str]:
    """The roles whose client-posted messages a model sees as posted (`user` always); a ValueError at
    startup for a role that does not exist."""
    roles = {role.strip().lower() for role in (raw or "").split(",") if role.strip()}
    unknown = sorted(roles - set(ROLES))
    if unknown:
        raise ValueError(f"{name}: {', '.join(unknown)} is not one of {', '.join(ROLES)}")
    return frozenset(roles | {"user"})


def model_messages(
    turn: TurnRequest,
    system_prompt: str = "",
    client_roles: frozenset[str] = frozenset({"user"}),
    budget_tokens: int = 0,
) -> list[dict]:
    """`[{"role", "content"}]` for an OpenAI-compatible model: the server's system prompt first (when
    set), the newest of the history the server trusts that fits `budget_tokens` (0: all; each time
    the model refused the turn's prompt as too long, half of what was sent), then the turn's user
    message."""
    head = [{"role": "system", "content": system_prompt}] if system_prompt else []
    trusted = [
        {"role": m["role"], "content": m["content"]}
        for m in turn.history
        if m["role"] in ROLES
        and ((m["role"] == "assistant" and m.get("generated")) or m["role"] in client_roles)
    ]
    query = {"role": "user", "content": turn.query}
    whole = sum(estimate_tokens(m["content"]) for m in (*head, *trusted, query))
    if turn.trimmed:  # the model refused a prompt that fitted the budget: its window is smaller
        budget_tokens = min(budget_tokens or whole, whole) >> turn.trimmed
    if budget_tokens <= 0 or whole <= budget_tokens:
        return [*head, *trusted, query]
    left = budget_tokens - sum(estimate_tokens(m["content"]) for m in head)
    if estimate_tokens(turn.query) > left:
        query["content"] = _cut(turn.query, max(left, MIN_QUERY_TOKENS))
        return [*head, query]
    left -= estimate_tokens(turn.query)
    kept: list[dict] = []
    for message in reversed(trusted):
        left -= estimate_tokens(message["content"])
        if left < 0:
            break
        kept.append(message)
    while len(kept) < len(trusted) and kept and kept[-1]["role"] == "assistant":
        kept.pop()  # a cut history opens with a user's turn, not an answer to a question left out
    return [*head, *reversed(kept), query]
