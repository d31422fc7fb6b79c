"""The customer's group chat: the first consumer of the write path.

A customer texts the Twilio number; Twilio puts that in a 1:1 conversation. The app
makes sure a group MMS conversation exists with the customer, the manager and the
assistant, and posts the customer's message there as the assistant, so the manager
sees it on their phone and can answer the whole group.

Its modules import one way, ``wiring`` -> ``forward`` -> ``remote``:

* ``wiring``: how a message gets here (an insert step that marks it, the task, a
  receiver that cancels), ``connect()`` for AppConfig.ready;
* ``forward``: create the group chat once, post each message once, record failures
  and retries (``retry_group_chats`` uses it);
* ``remote``: its Twilio calls, through the API backend.
"""

from .forward import (
    UNFINISHED,
    attach_group_chat,
    due_for_retry,
    ensure_group_chat,
    forward_customer_message,
    record_failure,
    reopen,
    retry_delay,
)
from .remote import UNIQUE_NAME_PREFIX, group_chat_unique_name
from .wiring import FORWARD_TASK, PENDING_GRACE, connect, forward_task, wants_forward

__all__ = [
    "FORWARD_TASK", "PENDING_GRACE", "UNFINISHED", "UNIQUE_NAME_PREFIX", "attach_group_chat", "connect",
    "due_for_retry",
    "ensure_group_chat", "forward_customer_message", "forward_task", "group_chat_unique_name",
    "record_failure", "reopen", "retry_delay", "wants_forward",
]
