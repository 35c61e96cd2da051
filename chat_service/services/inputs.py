"""Dify's `inputs` for a session, and the app's parameters: what a client may set, checked against the
app's input form (`GET /parameters`, cached by the provider) before anything reaches Dify."""

from __future__ import annotations

import json
import logging
from typing import Any

from chat_service import crud, live
from chat_service.extensions import db
from chat_service.providers.base import ProviderError
from chat_service.services.sessions import owned_session
from shared.errors import UpstreamFailed, ValidationFailed

log = logging.getLogger(__name__)

NO_PARAMETERS = {
    "opening_statement": None,
    "suggested_questions": [],
    "suggested_questions_after_answer": {"enabled": False},
    "user_input_form": [],
}
PUBLIC_KEYS = tuple(NO_PARAMETERS)


def parameters() -> dict[str, Any]:
    """The AI app's parameters a client shows (opening statement, starter questions, input form)."""
    provider = live.current().provider
    if provider.name != "dify":
        return dict(NO_PARAMETERS)
    try:
        found = provider.parameters()
    except ProviderError as error:
        raise UpstreamFailed(data={"detail": error.reason, "reason": error.reason_code}) from None
    return {key: found.get(key, NO_PARAMETERS[key]) for key in PUBLIC_KEYS}


def session_inputs(session: crud.TurnSession) -> dict[str, Any]:
    return json.loads(session.inputs) if session.inputs else {}


def set_inputs(user_id: str, session_id: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """Replace the session's inputs; with Dify, only variables of the app's input form are accepted."""
    session = owned_session(user_id, session_id)
    provider = live.current().provider
    if provider.name == "dify":
        known = _form_variables(provider)
        if known is not None:
            unknown = sorted(set(inputs) - known)
            if unknown:
                raise ValidationFailed(
                    {"inputs": {name: ["not a variable of the app's input form"] for name in unknown}}
                )
    crud.set_session_inputs(db.session, session.session_id, json.dumps(inputs, ensure_ascii=False))
    return {"session_id": session.session_id, "inputs": inputs}


def for_turn(session: crud.TurnSession) -> dict[str, Any]:
    """The inputs of the session's next turn: `DIFY_INPUTS` under the session's own; with Dify, a 1001
    naming every required variable still missing, before anything is sent."""
    provider = live.current().provider
    if provider.name != "dify":
        return {}
    merged = provider.merged_inputs(session_inputs(session))
    try:
        missing = provider.missing_inputs(merged)
    except Exception as error:  # the form is unknown: Dify itself will say what is missing
        log.warning("could not check the turn's inputs against Dify's form: %s", error)
        return merged
    if missing:
        raise ValidationFailed(
            {"inputs": {name: ["required by the AI app's input form"] for name in missing}}
        )
    return merged


def _invalid(names: list[str], problem: str) -> ValidationFailed:
    return ValidationFailed({"inputs": {name: [problem] for name in names}})


def _form_variables(provider) -> set[str] | None:
    try:
        form = provider.parameters().get("user_input_form") or []
    except Exception as error:
        log.warning("could not read Dify's input form: %s", error)
        return None
    names = set()
    for item in form:
        if isinstance(item, dict):
            for field in item.values():
                if isinstance(field, dict) and isinstance(field.get("variable"), str):
                    names.add(field["variable"])
    return names
