"""/api/ai/conversation: the seed's eight routes."""

from flask import current_app

from conversation_service.api import bp
from conversation_service.schemas import (
    BatchBody,
    ConversationPageSchema,
    ConversationSchema,
    CreateBody,
    PageArgs,
    PinArgs,
    UpdateBody,
    encode_cursor,
)
from conversation_service.services import conversations
from conversation_service.services.conversations import parse_path_id
from shared.auth import current_user_id
from shared.decorators import arguments, body, response
from shared.paging import Page, pages
from shared.rate_limits import limited


@bp.post("")
@limited("records_created")
@body(CreateBody)
@response(ConversationSchema)
def create_conversation(data):
    return conversations.create(
        current_user_id(), data["title"], data["dify_conversation_id"], data["is_pinned"]
    )


@bp.put("")
@body(UpdateBody)
@response(ConversationSchema)
def update_conversation(data):
    """Change the fields present in the body (besides `id`); the others stay as they are."""
    conversation_id = data.pop("id")
    return conversations.update(current_user_id(), conversation_id, data)


@bp.get("/<conversation_id:conversation_id>")
@response(ConversationSchema)
def get_conversation(conversation_id):
    return conversations.owned(current_user_id(), parse_path_id(conversation_id))


@bp.get("/page")
@arguments(PageArgs)
@response(ConversationPageSchema)
def page_conversations(args):
    """A page of the caller's records: pinned first, then `sortBy` in `sortOrder`; `keyword` in titles.

    With `cursor` (empty for the first page, then each page's `nextCursor`): keyset paging in the
    default order, `{records, size, hasMore, nextCursor}`.
    """
    if args["cursor"] is not None:
        records, has_more = conversations.scroll(
            current_user_id(), args["page_size"], args["cursor"], args["keyword"]
        )
        return {
            "records": records,
            "size": args["page_size"],
            "has_more": has_more,
            "next_cursor": encode_cursor(records[-1]) if has_more else None,
        }
    page = Page(args["page_no"], args["page_size"])
    records, total = conversations.page(
        current_user_id(), page, args["sort_by"], args["sort_order"], args["keyword"]
    )
    size = page.page_size
    return {
        "records": records,
        "total": total,
        "current": page.page,
        "size": size,
        "pages": pages(total, size),
    }


@bp.get("/list")
@response(ConversationSchema(many=True))
def list_conversations():
    """The caller's records, at most LIST_MAX_RECORDS of them: page through all with /page (`cursor`)."""
    return conversations.list_all(current_user_id(), current_app.config["LIST_MAX_RECORDS"])


@bp.delete("/<conversation_id:conversation_id>")
@response()
def delete_conversation(conversation_id):
    conversations.delete(current_user_id(), parse_path_id(conversation_id))


@bp.delete("/batch")
@body(BatchBody)
@response()
def delete_conversations(data):
    """Soft-delete every listed record, or none of them."""
    conversations.delete_many(current_user_id(), data["ids"])


@bp.put("/<conversation_id:conversation_id>/pinned")
@arguments(PinArgs)
@response(ConversationSchema)
def pin_conversation(args, conversation_id):
    return conversations.set_pinned(current_user_id(), parse_path_id(conversation_id), int(args["is_pinned"]))


@bp.put("/<conversation_id:conversation_id>/restore")
@response(ConversationSchema)
def restore_conversation(conversation_id):
    """Restore the caller's record deleted within RESTORE_WINDOW_DAYS, and its chat session (with the
    messages deleted along with it); a live record is answered as it is. 7002 after the window."""
    return conversations.restore(current_user_id(), parse_path_id(conversation_id))
