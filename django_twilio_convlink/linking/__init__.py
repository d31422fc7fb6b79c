"""Linking conversations to the site's bookings, by the customer's phone.

Read in this order:

* ``bookings``: the site's booking model as the settings name it (``BookingFields``);
* ``phone_index``: the ``BookingPhone`` index, its key format, its upkeep and repair;
* ``lookup``: from a phone to the best booking (one query; a batch of phones in two);
* ``rules``: when a conversation gets a booking (automatic, retroactive, manual) and
  the ``conversation_linked`` signal each way sends;
* ``batch``: ``update_conversation_links``, the relink of any number of conversations.

The names below are the public API (docs/api.rst, "Storing and linking"); the modules' other names
may change between releases.
"""

from .batch import LinkReport, PlannedLink, update_conversation_links
from .lookup import find_booking, get_booking_from_phone
from .phone_index import (
    PhoneIndexRepair,
    index_booking_phone,
    index_missing_booking_phones,
    rebuild_booking_phones,
    unindexed_bookings,
)
from .rules import (
    link_conversations_to_booking,
    link_manually,
    link_on_first_phone,
    manual_link_saved,
    relink_phone,
    relink_phone_holder,
)

__all__ = [
    "LinkReport",
    "PhoneIndexRepair",
    "PlannedLink",
    "find_booking",
    "get_booking_from_phone",
    "index_booking_phone",
    "index_missing_booking_phones",
    "link_conversations_to_booking",
    "link_manually",
    "link_on_first_phone",
    "manual_link_saved",
    "rebuild_booking_phones",
    "relink_phone",
    "relink_phone_holder",
    "unindexed_bookings",
    "update_conversation_links",
]
