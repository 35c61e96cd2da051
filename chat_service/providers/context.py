"""What a model is shown of a conversation: the server's system prompt and the history it trusts.

Messages posted over REST may carry any role, so a stored `system` or `assistant` message may be a
client's words. By default only `user` messages and the replies the server generated (`generated`)
reach a model; a client-posted `system` or `assistant` message is left out of the context (it is still
stored and shown). `AI_CLIENT_ROLES` lets a deployment with trusted clients send those roles as posted.
"""

from __future__ import annotations

from chat_service.providers.base import TurnRequest

ROLES = ("user", "assistant", "system")


def parse_client_roles(raw: str | None, name: str = "AI_CLIENT_ROLES") -> frozenset[str]:
    """The roles whose client-posted messages a model sees as posted (`user` always); a ValueError at
    startup for a role that does not exist."""
    roles = {role.strip().lower() for role in (raw or "").split(",") if role.strip()}
    unknown = sorted(roles - set(ROLES))
    if unknown:
        raise ValueError(f"{name}: {', '.join(unknown)} is not one of {', '.join(ROLES)}")
    return frozenset(roles | {"user"})


def model_messages(
    turn: TurnRequest, system_prompt: str = "", client_roles: frozenset[str] = frozenset({"user"})
) -> list[dict]:
    """`[{"role", "content"}]` for an OpenAI-compatible model: the server's system prompt first (when
    set), the history the server trusts, then the turn's user message."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    for message in turn.history:
        role = message["role"]
        trusted = (role == "assistant" and message.get("generated")) or role in client_roles
        if trusted and role in ROLES:
            messages.append({"role": role, "content": message["content"]})
    messages.append({"role": "user", "content": turn.query})
    return messages
