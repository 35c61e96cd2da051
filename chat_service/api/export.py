"""Export and import of a user's conversations (NDJSON, Markdown): docs/export.md.

- `GET /api/chat/export`: every live conversation of the caller, streamed as NDJSON.
- `GET /api/chat/sessions/<session_id>/export?format=markdown|ndjson`: one conversation.
- `POST /api/chat/import`: an NDJSON export taken back, with new ids; duplicates skipped.
"""

from urllib.parse import quote

from flask import Response, g, request, stream_with_context

from chat_service.api import bp
from chat_service.export_schemas import ImportSummarySchema, SessionExportArgs
from chat_service.models import utcnow
from chat_service.services import export, importing, sessions
from shared.auth import current_user_id
from shared.decorators import arguments, response

NDJSON = "application/x-ndjson"
MARKDOWN = "text/markdown"  # Flask adds "; charset=utf-8"
IMPORT_ENDPOINT = "api.import_conversations"


def _download(lines, mimetype: str, filename: str, fallback: str) -> Response:
    """A streamed attachment: `filename` (UTF-8, RFC 6266) with an ASCII `fallback`."""
    streamed = Response(stream_with_context(lines), mimetype=mimetype)
    encoded = quote(filename, safe="")
    disposition = f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"
    streamed.headers["Content-Disposition"] = disposition
    streamed.headers["Cache-Control"] = "no-store"
    streamed.headers["X-Accel-Buffering"] = "no"  # nginx passes each chunk on as it comes
    return streamed


@bp.get("/export")
@response()
def export_conversations():
    """All the caller's live conversations as NDJSON: an `export` line, each `session` followed by its
    `message` lines, and an `end` line with the counts (docs/export.md). 503 (5000) before the first
    byte when conversation_service, which holds the pins, does not answer."""
    user_id = current_user_id()
    lines = export.Export(user_id).start().lines()
    name = f"chat-export-{utcnow():%Y%m%d-%H%M%S}.ndjson"
    return _download(lines, NDJSON, name, name)


@bp.get("/sessions/<session_id>/export")
@arguments(SessionExportArgs)
@response()
def export_session(args, session_id):
    """One conversation: `format=markdown` (default; the title as heading, each message with its role
    and time) or `format=ndjson` (the lines of the full export, for this session only)."""
    session = sessions.owned_session(current_user_id(), session_id)
    if args["format"] == "ndjson":
        lines = export.Export(session.user_id, only=session.session_id).start().lines()
        name = f"{session.title}.ndjson"
        return _download(lines, NDJSON, name, f"conversation-{session.session_id}.ndjson")
    name = f"{session.title}.md"
    fallback = f"conversation-{session.session_id}.md"
    return _download(export.markdown(session), MARKDOWN, name, fallback)


@bp.before_request
def _spool_import_body() -> None:
    """An import's body may be far larger than MAX_CONTENT_LENGTH (IMPORT_MAX_BYTES): read here, into a
    temporary file, before admission control would read it into memory."""
    if request.endpoint != IMPORT_ENDPOINT:
        return
    limit = importing.max_bytes()
    request.max_content_length = limit
    g.import_body = importing.spool(request.stream, limit, request.content_length)


@bp.post("/import")
@response(ImportSummarySchema)
def import_conversations():
    """Take an NDJSON export back (any content type; at most IMPORT_MAX_BYTES): every line is validated
    first (1001 with the line number; nothing stored), then each session is imported in one transaction,
    with new ids. A session imported before is skipped as a duplicate."""
    body = g.pop("import_body")
    try:
        return importing.import_export(current_user_id(), body)
    finally:
        body.close()
