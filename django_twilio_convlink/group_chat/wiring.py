"""How a message gets to the forward: the group chat plugged into the write path as a
consumer, the way a site's code would plug in (``connect``, from AppConfig.ready).
The write path does not know this package.

* ``mark_for_forward``, an insert step (``persistence.register_insert_step``),
  decides whether a new message concerns the group chat and marks its row
  ``pending`` *in the INSERT itself*. Not in a ``message_received`` receiver: that
  runs after the commit, and a process killed in between would lose the forward for
  good; a row marked in its own INSERT is found by ``retry_group_chats`` whatever
  happens next (PENDING_GRACE). It costs no statement. After the INSERT it enqueues
  the forward's task (``tasks.enqueue``);
* ``forward_task`` is that task, registered with ``tasks`` as
  ``django_twilio_convlink.tasks.forward_customer_message_task``, the path queued
  task rows and workers name;
* a ``message_removed`` receiver cancels a forward that has not started: the customer
  took the message back.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

from django.utils import timezone

from .. import get_message_model, tasks
from ..accounts import is_subaccount_conversation
from ..choices import ForwardState
from ..conf import convlink_settings
from ..exceptions import ApiError
from ..models import AbstractTwilioConversation, AbstractTwilioMessage
from ..persistence import HISTORY, register_insert_step
from ..phones import customer_phone_from_author
from ..signals import message_removed
from .forward import drop_forward, forward_customer_message
from .remote import UNIQUE_NAME_PREFIX

FORWARD_TASK = "forward_customer_message_task"
# A message to forward whose task has not run by then is presumed lost, and due for
# retry_group_chats.
PENDING_GRACE = datetime.timedelta(minutes=5)


def wants_forward(conversation: AbstractTwilioConversation, author: str) -> bool:
    """Whether a new message by ``author`` in ``conversation`` goes to the group chat:
    an inbound message from a customer's phone, in a conversation that is not itself
    a group chat (a message in a group chat never makes another group chat) and that
    belongs to the main account: the API calls act with ACCOUNT_SID's credentials,
    in the main account, which a sub-account's number and customers are not part of."""
    return (
        bool(convlink_settings.GROUP_CHAT)
        and not conversation.is_group_chat
        and not is_subaccount_conversation(conversation)
        and not conversation.unique_name.startswith(UNIQUE_NAME_PREFIX)
        and customer_phone_from_author(author) is not None
    )


def mark_for_forward(message: AbstractTwilioMessage, conversation: AbstractTwilioConversation,
                     origin: str) -> Callable[[], None] | None:
    """The group chat's step before a new message row is inserted (an insert step):
    mark it pending when it is to be forwarded, and enqueue its task after the
    INSERT. A message whose first news is its removal was taken back: never
    forwarded; nor is history brought in by ``sync_twilio_conversations`` (origin
    "sync"): it is not news. With GROUP_CHAT off, this reads one setting and nothing
    else."""
    if origin == HISTORY or message.date_removed is not None or not wants_forward(conversation,
                                                                                  message.author):
        return None
    message.forward_state = ForwardState.PENDING
    message.forward_retry_at = timezone.now() + PENDING_GRACE
    return lambda: tasks.enqueue(FORWARD_TASK, message.pk)


def forward_task(message_pk: int) -> str:
    """Ensure the group chat and forward one message: the task's function. A
    transient failure is retried at its backoff where the task backend can defer;
    elsewhere retry_group_chats, run from cron, does it."""
    try:
        return forward_customer_message(message_pk)
    except ApiError as error:
        if error.transient and tasks.TASKS_AVAILABLE:  # else no backend to defer on
            retry_at = (get_message_model()._default_manager.filter(pk=message_pk)
                        .values_list("forward_retry_at", flat=True).first())
            if retry_at is not None:
                tasks.enqueue_at(FORWARD_TASK, retry_at, message_pk)
        raise


def cancel_forward(sender: Any, message: AbstractTwilioMessage, **kwargs: Any) -> None:
    """``message_removed`` receiver: a forward not posted yet (pending, or failed and
    waiting for its retry) is dropped; one already ``sending`` may be in the group
    chat by now and is left to finish."""
    if not convlink_settings.GROUP_CHAT:
        return
    drop_forward(type(message), message.pk, forward_state__in=[ForwardState.PENDING, ForwardState.FAILED])


def connect() -> None:
    """Plug the group chat into the write path (called from AppConfig.ready; running
    it again changes nothing)."""
    register_insert_step(mark_for_forward)
    tasks.register(FORWARD_TASK, forward_task, recovery="retry_group_chats will pick it up",
                   recorded=(ApiError,))
    message_removed.connect(cancel_forward, dispatch_uid="django_twilio_convlink.group_chat.cancel_forward")
