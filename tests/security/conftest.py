"""Both services side by side, on each backend."""

from tests.conversation.conftest import conv as _conv
from tests.conversation.conftest import conversation_app as _conversation_app
from tests.conversation.conftest import conversation_database as _conversation_database

# The fixtures of tests/conversation, shared here.
conv = _conv
conversation_app = _conversation_app
conversation_database = _conversation_database
