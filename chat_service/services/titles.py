"""A title for a session still called `新会话`: after a completed reply, the provider names it.

- `dify`: Dify's own naming call (`POST /conversations/{id}/name`, `auto_generate`);
- `openai`: one short, non-streamed completion asking for a title in the conversation's language;
- `echo` (offline): the first words of the user's message.

Only a title nobody set is replaced (`title_version` 0), so a user's rename always wins, even one made
while the title was being generated. `TITLE_GENERATION=false` turns it off. A failure is logged and
leaves the title as it was: it never fails the turn.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from flask import current_app

from chat_service import crud, events, live
from chat_service.extensions import db
from chat_service.models import DEFAULT_TITLE

if TYPE_CHECKING:
    from chat_service.live.turns import Turn
    from chat_service.providers.base import TurnRequest

log = logging.getLogger(__name__)

ECHO_TITLE_MAX = 30
TITLE_MAX = 60
EXCERPT = 1000
PROMPT = (
    "Give this conversation a short title: at most 8 words, in the language the user wrote in, "
    "with no quotes, no punctuation at the end and nothing else."
)
_SPACES = re.compile(r"\s+")
_QUOTES = "\"'“”‘’「」『』《》`*#"


def after_reply(turn: Turn, request: TurnRequest) -> None:
    """Give the session a title if it still has the default one nobody chose (never raises)."""
    if not current_app.config["TITLE_GENERATION"]:
        return
    try:
        session = crud.get_session(db.session, turn.session_id)
        if session is None or session.title_version != 0 or session.title != DEFAULT_TITLE:
            return
        db.session.remove()  # no connection held while the provider thinks
        title = _generate(turn, request)
        if not title:
            return
        if crud.set_generated_title(db.session, turn.session_id, title):
            session = crud.get_session(db.session, turn.session_id)
            if session is not None:
                events.session_updated(session)
    except Exception as error:
        log.warning(
            "generating a title failed: %s: %s",
            error.__class__.__name__,
            error,
            extra={"session_id": turn.session_id},
        )
    finally:
        db.session.remove()


def _generate(turn: Turn, request: TurnRequest) -> str:
    provider = live.current().provider
    if provider.name == "dify" and turn.dify_conversation_id:
        return clean(provider.generate_name(turn.dify_conversation_id, turn.user_id))
    if provider.name == "openai":
        conversation = f"User: {request.query[:EXCERPT]}\n\nAssistant: {turn.content[:EXCERPT]}"
        messages = [{"role": "system", "content": PROMPT}, {"role": "user", "content": conversation}]
        return clean(provider.complete(messages, max_tokens=32))
    return first_words(request.query)


def first_words(text: str) -> str:
    """The offline title: the message's start, whitespace collapsed, at most 30 characters."""
    return _SPACES.sub(" ", text).strip()[:ECHO_TITLE_MAX].strip()


def clean(title: str) -> str:
    """A model's title as one line, no surrounding quotes or markup, at most 60 characters."""
    title = _SPACES.sub(" ", title or "").strip().strip(_QUOTES).strip()
    if title.lower().startswith("title:"):
        title = title[len("title:") :].strip()
    return title[:TITLE_MAX].strip()
