"""History: an existing Twilio account's conversations brought in through the REST API,
and what webhooks missed repaired (``sync_twilio_conversations``).

``reading`` reads Twilio (the SDK, a page at a time, 429s waited out), ``records``
turns what it reads into the webhook events the app stores, and ``sync`` stores them
through the webhook's own code. Imports run one way: sync -> records, reading.
"""

from .reading import Backoff, TwilioHistory
from .sync import ConversationDone, Sync, SyncReport

__all__ = ["Backoff", "ConversationDone", "Sync", "SyncReport", "TwilioHistory"]
