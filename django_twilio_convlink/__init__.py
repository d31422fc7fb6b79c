"""Twilio Conversations webhooks for Django: saved messages, conversations linked to
the site's bookings and apartments by the customer's phone.

The modules, in the order a webhook meets them:

* foundations: ``conf`` (settings, one lazy accessor), ``swappable`` (the site's
  models: ``get_conversation_model``...), ``storage``, ``choices`` (the values rows
  take), ``exceptions`` (each with its HTTP status and delivery status), ``phones``
  (E.164, who is the system side), ``models`` (abstract models, the phone index),
  ``db`` (the one retry of transient database errors), ``signals`` (the public
  signals), ``checks``;
* the webhook: ``views`` (thin), ``signature`` (is it Twilio's, the forged-request
  counter), ``events`` (form fields to typed events), ``deliveries`` (the delivery
  log: each delivery's outcome logged and recorded, replay), ``accounts`` (which
  account may write a conversation);
* ingest: ``handlers`` (one transaction per event, the account rule applied),
  ``persistence`` (conversations and messages stored once; ``register_insert_step``),
  ``receipts`` (delivery receipts, the message's summary status) and ``optouts``
  (STOP and START, the check every send makes);
* ``linking`` (a package: bookings, phone_index, lookup, rules, batch; ``booking_lookup``
  keeps the README's import path of its lookup) and ``receivers`` (the site's booking
  saves, wired to it);
* for the consumers: ``api`` (Twilio REST backends) and ``tasks`` (binds any
  consumer's task function to the site's task backend, importing none);
* consumers of the above: ``group_chat`` (a package: the customer's group chat),
  ``media`` (a package: customers' files into the site's storage) and ``sending``
  (``send_message``);
* ``apps`` connects the receivers and the group chat at startup;
* for the site: ``admin``, ``urls``, ``testing``, the management commands, the
  migrations of the app's own tables.

Imports run one way, from the consumers down to the foundations: no module imports
one that imports it (``tests/unit/test_layout.py`` checks the whole graph).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Their documented import path; defined below the package root (see swappable).
from .swappable import get_booking_model as get_booking_model  # noqa: E402
from .swappable import get_conversation_model as get_conversation_model  # noqa: E402
from .swappable import get_message_model as get_message_model  # noqa: E402

if TYPE_CHECKING:
    from .models import AbstractTwilioConversation, AbstractTwilioMessage


# The opt-out helpers (``optouts``), importable from the package root. Imported when
# called: the package root must not load models before the app registry is ready.
def is_opted_out(phone: str) -> bool:
    """Whether ``phone`` (any format) is opted out of texts now."""
    from .optouts import is_opted_out

    return is_opted_out(phone)


def opt_out(phone: str, *, how: str = "admin", detail: str = "", origin: str = "admin") -> bool:
    """Opt ``phone`` (any format) out of texts: the app sends it nothing more. Returns
    False when it already was; ValueError for a value that is no phone number."""
    from .optouts import opt_out

    return opt_out(phone, how=how, detail=detail, origin=origin)


def send_message(conversation: AbstractTwilioConversation, body: str, *, media: str | None = None,
                 author: str | None = None) -> AbstractTwilioMessage:
    """Post a message into ``conversation`` through the API backend, store it as the
    webhook would and return it (``sending``)."""
    from .sending import send_message

    return send_message(conversation, body, media=media, author=author)


def opt_in(phone: str, *, how: str = "admin", detail: str = "", origin: str = "admin") -> bool:
    """Opt ``phone`` (any format) back in. Returns False when it was not opted out."""
    from .optouts import opt_in

    return opt_in(phone, how=how, detail=detail, origin=origin)
