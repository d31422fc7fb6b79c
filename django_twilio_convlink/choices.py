"""The values the app's rows take, as Django choices: plain classes with no model and
no setting behind them, so that any module may name them (``exceptions`` does,
which everything imports) without importing ``models``."""

from django.db import models
from django.utils.translation import gettext_lazy as _


class Direction(models.TextChoices):
    INBOUND = "inbound", _("Inbound")
    OUTBOUND = "outbound", _("Outbound")


class LinkMethod(models.TextChoices):
    AUTOMATIC = "automatic", _("Automatic (customer's first message)")
    RETROACTIVE = "retroactive", _("Retroactive (booking saved later)")
    MANUAL = "manual", _("Manual")


class ForwardState(models.TextChoices):
    """Where an inbound customer message stands on its way into the group chat."""

    PENDING = "pending", _("Pending")
    SENDING = "sending", _("Sending")
    SENT = "sent", _("Sent")
    FAILED = "failed", _("Failed, will be retried")
    PERMANENT = "permanent", _("Failed permanently")
    # Not sent, on purpose: the customer has opted out (``optouts``). Not retried
    # until someone asks for the permanent ones again, after an opt-in.
    SKIPPED = "skipped", _("Skipped (customer opted out)")


class DeliveryStatus(models.TextChoices):
    """What became of one webhook delivery (``WebhookDelivery.status``)."""

    RECEIVED = "received", _("Received, waiting to be processed")
    PROCESSED = "processed", _("Processed")
    FAILED = "failed", _("Failed")
    REJECTED = "rejected", _("Rejected (malformed)")
    REFUSED = "refused", _("Refused (another account's conversation)")


class ReceiptStatus(models.TextChoices):
    """What Twilio reports of one message at one recipient (``onDeliveryUpdated``),
    and the message's summary of all its recipients (``receipts.summarize``)."""

    SENT = "sent", _("Sent")
    DELIVERED = "delivered", _("Delivered")
    READ = "read", _("Read")
    FAILED = "failed", _("Failed")
    UNDELIVERED = "undelivered", _("Undelivered")


class OptOutMethod(models.TextChoices):
    """How a phone was opted out, or back in (``optouts``)."""

    KEYWORD = "keyword", _("Keyword texted by the customer")
    ERROR = "error", _("Twilio refused a send (error 21610)")
    ADMIN = "admin", _("Changed by a person")


class MediaState(models.TextChoices):
    """Where a customer's file stands on its way into the site's storage (``StoredMedia``)."""

    PENDING = "pending", _("Waiting to be downloaded")
    DOWNLOADING = "downloading", _("Downloading")
    STORED = "stored", _("Stored")
    FAILED = "failed", _("Failed, will be retried")
    PERMANENT = "permanent", _("Failed permanently")
    REFUSED = "refused", _("Refused (too large, or not the size Twilio declared)")
    PRUNED = "pruned", _("Deleted after MEDIA_RETENTION_DAYS")
