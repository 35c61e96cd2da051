"""/api/chat/parameters and /api/chat/sessions/<session_id>/inputs: the AI app's parameters, and the
inputs (Dify's input form) a session's turns are sent with."""

from chat_service.api import bp
from chat_service.schemas import InputsBody, InputsSchema, ParametersSchema
from chat_service.services import inputs
from chat_service.services.sessions import owned_session
from shared.auth import current_user_id
from shared.decorators import body, response


@bp.get("/parameters")
@response(ParametersSchema)
def get_parameters():
    """The AI app's opening statement, starter questions and input form (empty without Dify)."""
    return inputs.parameters()


@bp.get("/sessions/<session_id>/inputs")
@response(InputsSchema)
def get_inputs(session_id):
    session = owned_session(current_user_id(), session_id)
    return {"session_id": session.session_id, "inputs": inputs.session_inputs(session)}


@bp.put("/sessions/<session_id>/inputs")
@body(InputsBody)
@response(InputsSchema)
def put_inputs(data, session_id):
    """Replace the session's inputs (merged over the server's `DIFY_INPUTS` on every turn)."""
    return inputs.set_inputs(current_user_id(), session_id, data["inputs"])
