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


class DeliveryStatus(models.TextChoices):
    """What became of one webhook delivery (``WebhookDelivery.status``)."""

    RECEIVED = "received", _("Received, waiting to be processed")
    PROCESSED = "processed", _("Processed")
    FAILED = "failed", _("Failed")
    REJECTED = "rejected", _("Rejected (malformed)")
    REFUSED = "refused", _("Refused (another account's conversation)")
