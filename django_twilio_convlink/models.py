"""Abstract models the site subclasses, and the phone index the app owns.

As with ``AbstractUser`` and ``AUTH_USER_MODEL``, the site declares concrete
subclasses in one of its own apps and names them in ``TWILIO_CONVLINK``; the site's
``makemigrations`` then creates their tables, foreign keys to its own booking and
apartment models included. Model names are read from settings when this module is
imported, exactly as Django reads ``AUTH_USER_MODEL`` for ``LogEntry.user``.
"""

from __future__ import annotations

import copy
import datetime
from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING, Any, Self

from django.db import models
from django.db.models import QuerySet
from django.db.models.base import ModelBase
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .choices import (
    DeliveryStatus,
    Direction,
    ForwardState,
    LinkMethod,
    MediaState,
    OptOutMethod,
    ReceiptStatus,
)
from .conf import convlink_settings
from .storage import INLINE_TYPES, media_file_name, media_storage


class ChangedFieldsModel(models.Model):
    """A model whose ``save()`` of a stored row writes only the fields changed on the
    instance since it was loaded or saved (and ``auto_now`` fields), as if
    ``update_fields`` named them; ``save(update_fields=...)`` is Django's own.

    Why: the app writes its rows with UPDATEs of its own after handing instances
    out. A ``message_received`` receiver gets the message before (or while) the group
    chat's forward marks it sent; a receiver that set a field of the site's and
    called ``save()`` once wrote the stale ``pending`` back, and the message was
    posted a second time. Such a stale instance now writes only what its holder
    changed. A new row (and an instance without a load snapshot, e.g. from
    ``bulk_create``) saves as in Django.
    """

    class Meta:
        abstract = True

    def save(self, *, force_insert: bool | tuple[ModelBase, ...] = False, force_update: bool = False,
             using: str | None = None, update_fields: Iterable[str] | None = None) -> None:
        stored = self.__dict__.get("_convlink_stored")
        if (update_fields is None and not force_insert and not self._state.adding
                and stored is not None and using in (None, self._state.db)):
            update_fields = self._changed_fields(stored)
        super().save(force_insert=force_insert, force_update=force_update, using=using,
                     update_fields=update_fields)
        written = None if update_fields is None else self._attnames(update_fields)
        self.__dict__["_convlink_stored"] = {**(stored or {}), **self._stored_values(written)}

    @classmethod
    def from_db(cls, db: str | None, field_names: Collection[str], values: Collection[Any],
                **kwargs: Any) -> Self:
        instance = super().from_db(db, field_names, values, **kwargs)
        instance.__dict__["_convlink_stored"] = instance._stored_values()
        return instance

    def _stored_values(self, names: Collection[str] | None = None) -> dict[str, Any]:
        """Loaded values by attname (not the deferred ones), mutable JSON copied so that
        a change made in place is still a change."""
        values = self.__dict__
        return {
            f.attname: copy.deepcopy(values[f.attname]) if isinstance(values[f.attname], dict | list)
            else values[f.attname]
            for f in self._meta.concrete_fields
            if not f.primary_key and f.attname in values and (names is None or f.attname in names)
        }

    def _attnames(self, names: Iterable[str]) -> set[str]:
        wanted = set(names)
        return {f.attname for f in self._meta.concrete_fields if f.name in wanted or f.attname in wanted}

    def _changed_fields(self, stored: dict[str, Any]) -> list[str]:
        values = self.__dict__
        return [
            f.name for f in self._meta.concrete_fields
            if not f.primary_key and f.attname in values
            and (getattr(f, "auto_now", False) or f.attname not in stored
                 or values[f.attname] != stored[f.attname])
        ]

    def refresh_from_db(self, using: str | None = None, fields: Iterable[str] | None = None,
                        from_queryset: QuerySet[Self] | None = None) -> None:
        fields = list(fields) if fields is not None else None
        super().refresh_from_db(using=using, fields=fields, from_queryset=from_queryset)
        refreshed = None if fields is None else self._attnames(fields)
        stored = self.__dict__.get("_convlink_stored") or {}
        self.__dict__["_convlink_stored"] = {**stored, **self._stored_values(refreshed)}


class AbstractTwilioConversation(ChangedFieldsModel):
    """One Twilio conversation, as the site's concrete model (``CONVERSATION_MODEL``)
    inherits it, the way a site subclasses ``AbstractUser``.

    Keyed by ``conversation_sid``; ``customer_phone`` (E.164) is the phone the
    booking lookup ran for, ``booking`` and ``apartment`` the link
    (``related_name="twilio_conversations"``) and ``link_method`` how it was made
    (``automatic``, ``retroactive``, ``manual`` or blank). A group chat the app made is
    a row of its own (``is_group_chat``), pointed to by its customer's
    conversation's ``group_chat``. ``save()`` writes only the fields changed on the
    instance (``ChangedFieldsModel``), so an instance a signal hands out is safe to
    keep and save.
    """

    conversation_sid = models.CharField(_("conversation SID"), max_length=34, unique=True)
    # Twilio allows 256 characters in both.
    friendly_name = models.CharField(_("friendly name"), max_length=256, blank=True)
    unique_name = models.CharField(_("unique name"), max_length=256, blank=True)
    state = models.CharField(_("state"), max_length=20, blank=True)
    chat_service_sid = models.CharField(max_length=34, blank=True)
    messaging_service_sid = models.CharField(max_length=34, blank=True)
    attributes = models.JSONField(default=dict, blank=True)
    date_created = models.DateTimeField(_("created at Twilio"), null=True, blank=True)
    # The newest change a conversation event reported (DateUpdated, or StateUpdated of a
    # state change): a retried older event must not undo a newer one.
    date_updated = models.DateTimeField(_("updated at Twilio"), null=True, blank=True)
    # The AccountSid of the delivery that created the row; blank means the main account
    # (rows stored before the field existed, group chats the app made). Events signed
    # for another account are refused (see ``accounts.py``).
    account_sid = models.CharField(_("Twilio account"), max_length=34, blank=True)

    customer_phone = models.CharField(
        _("customer phone"), max_length=32, blank=True, db_index=True,
        help_text=_("E.164; learned from the customer's first message or the conversation's binding."),
    )
    booking = models.ForeignKey(
        convlink_settings.BOOKING_MODEL, verbose_name=_("booking"),
        null=True, blank=True, on_delete=models.SET_NULL, related_name="twilio_conversations",
    )
    apartment = models.ForeignKey(
        convlink_settings.APARTMENT_MODEL, verbose_name=_("apartment"),
        null=True, blank=True, on_delete=models.SET_NULL, related_name="twilio_conversations",
    )
    link_method = models.CharField(
        _("link method"), max_length=12, choices=LinkMethod.choices, blank=True,
    )
    linked_at = models.DateTimeField(_("linked at"), null=True, blank=True)
    # Set once, when the customer's phone is first learned and the booking lookup runs:
    # the marker that keeps every later message free of booking queries.
    booking_lookup_at = models.DateTimeField(_("booking looked up at"), null=True, blank=True)

    # The customer's group chat (customer, manager, assistant), itself a conversation
    # row marked is_group_chat; and the last failure to create it or post into it.
    is_group_chat = models.BooleanField(_("is a group chat"), default=False)
    group_chat = models.ForeignKey(
        "self", verbose_name=_("group chat"), null=True, blank=True, on_delete=models.SET_NULL,
        related_name="customer_conversations", limit_choices_to={"is_group_chat": True},
    )
    group_chat_error = models.TextField(_("group chat error"), blank=True)
    group_chat_error_code = models.IntegerField(_("group chat error code"), null=True, blank=True)
    group_chat_attempts = models.PositiveIntegerField(_("group chat failures in a row"), default=0)
    group_chat_retry_at = models.DateTimeField(_("next group chat retry"), null=True, blank=True)
    if TYPE_CHECKING:
        # django-stubs declares no "_id" attribute for a ForeignKey("self") of an abstract
        # model; its type is the primary key of the site's concrete model.
        group_chat_id: Any

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True
        verbose_name = _("Twilio conversation")
        verbose_name_plural = _("Twilio conversations")
        ordering = ["-created_at"]
        # Replying from the admin texts a customer: its own permission, not "change".
        permissions = [("send_twilio_message", _("Can send Twilio messages"))]

    def __str__(self) -> str:
        # The customer, not the SID: the placeholder name only repeats the SID.
        name = "" if self.has_placeholder_name() else self.friendly_name
        if name and self.customer_phone and self.customer_phone not in name:
            return f"{name} ({self.customer_phone})"
        return name or self.customer_phone or self.conversation_sid

    # The friendly name a conversation gets when the app stores it before Twilio has
    # named it (a message that overtook its onConversationAdded); any later event's
    # name replaces it.
    PLACEHOLDER_NAME = "Conversation {sid}"

    @classmethod
    def placeholder_name(cls, conversation_sid: str) -> str:
        return cls.PLACEHOLDER_NAME.format(sid=conversation_sid)

    def has_placeholder_name(self) -> bool:
        return self.friendly_name == self.placeholder_name(self.conversation_sid)

    @property
    def is_linked(self) -> bool:
        return self.booking_id is not None


class AbstractTwilioMessage(ChangedFieldsModel):
    """One message of a conversation, as the site's concrete model (``MESSAGE_MODEL``)
    inherits it.

    Keyed by ``message_sid``; ``direction`` is ``inbound`` or ``outbound`` by its
    author against the system phones and identities. The ``forward_*`` fields are the
    group chat's (a customer's inbound message), the ``delivery_*`` fields the
    delivery receipts' summary; ``media`` holds Twilio's descriptors of the files it
    carried. Removed messages keep their row and body (``date_removed``,
    ``is_removed``).
    """

    message_sid = models.CharField(_("message SID"), max_length=34, unique=True)
    conversation = models.ForeignKey(
        convlink_settings.CONVERSATION_MODEL, verbose_name=_("conversation"),
        on_delete=models.CASCADE, related_name="messages",
    )
    author = models.CharField(_("author"), max_length=255, blank=True)
    body = models.TextField(_("body"), blank=True)
    direction = models.CharField(_("direction"), max_length=8, choices=Direction.choices)
    index = models.PositiveIntegerField(_("index"), null=True, blank=True)
    date_created = models.DateTimeField(_("created at Twilio"), null=True, blank=True)
    date_updated = models.DateTimeField(_("updated at Twilio"), null=True, blank=True)
    date_removed = models.DateTimeField(
        _("removed at Twilio"), null=True, blank=True,
        help_text=_("Set by onMessageRemoved; the row is kept so nothing a customer sent is lost."),
    )
    source = models.CharField(_("source"), max_length=20, blank=True)
    participant_sid = models.CharField(max_length=34, blank=True)
    attributes = models.JSONField(default=dict, blank=True)
    media = models.JSONField(default=list, blank=True)
    # Inbound customer messages only: the copy posted into the group chat.
    forward_state = models.CharField(_("forward"), max_length=10, choices=ForwardState.choices,
                                     blank=True)
    forwarded_sid = models.CharField(_("forwarded as"), max_length=34, blank=True)
    forward_attempts = models.PositiveIntegerField(_("failed forward attempts"), default=0)
    # When an unfinished forward is due (again): a pending one whose task may be lost,
    # a sending one whose worker may have died, a failed one after its backoff.
    # Set only while a forward is unfinished, so its index stays small.
    forward_retry_at = models.DateTimeField(_("forward due at"), null=True, blank=True, db_index=True)
    # Why the forward was skipped (the customer has opted out): shown with ``skipped``.
    forward_skip_reason = models.CharField(_("forward skipped because"), max_length=255, blank=True)

    # What Twilio reported of the message's delivery, from its onDeliveryUpdated
    # receipts (``receipts``): the summary over all recipients, blank until a
    # receipt arrives, and each recipient's last receipt, keyed by participant SID
    # (a group MMS message has several SMS recipients).
    delivery_status = models.CharField(_("delivery status"), max_length=11, choices=ReceiptStatus.choices,
                                       blank=True)
    delivery_error_code = models.IntegerField(_("delivery error code"), null=True, blank=True)
    delivery_updated_at = models.DateTimeField(_("delivery updated at"), null=True, blank=True)
    delivery_receipts = models.JSONField(_("receipts by recipient"), default=dict, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True
        verbose_name = _("Twilio message")
        verbose_name_plural = _("Twilio messages")
        ordering = ["conversation_id", "index", "pk"]

    def __str__(self) -> str:
        who = f"{self.get_direction_display()} {self.author or self.message_sid}"
        if not self.body:
            return f"{who} ({self.message_sid})" if self.author else who
        return f"{who}: {self.body if len(self.body) <= 50 else self.body[:49].rstrip() + '…'}"

    @property
    def is_removed(self) -> bool:
        return self.date_removed is not None


class BookingPhone(models.Model):
    """Each booking's customer phone in E.164: the index the booking lookup joins on.

    Sites store phones however their forms let users type them, so the lookup cannot
    compare the site's column directly, and normalizing 100,000 rows in Python per
    webhook is out of the question. This table holds one normalized, indexed phone per
    booking, kept in sync by the receivers in ``receivers.py`` and rebuilt by
    ``manage.py rebuild_booking_phones`` after bulk imports that bypass signals.

    The booking is referenced by its primary key as text, not by a foreign key: a
    foreign key would tie this app's migration to whichever migration of the site
    creates the booking model, which no static migration can name.
    """

    booking_key = models.CharField(max_length=64, unique=True)
    phone = models.CharField(max_length=32)

    class Meta:
        verbose_name = _("booking phone")
        # Covers the lookup (phone -> booking keys) without touching the table.
        indexes = [models.Index(fields=["phone", "booking_key"], name="convlink_phone_booking")]

    def __str__(self) -> str:
        return f"{self.booking_key}: {self.phone}"


class WebhookDeliveryQuerySet(models.QuerySet):
    def unfinished(self, now: datetime.datetime | None = None) -> WebhookDeliveryQuerySet:
        """Deliveries still ``received`` after DELIVERY_UNFINISHED_AFTER seconds: their
        processing never ended (the worker was killed, or ran out of time). Nothing of
        their event was written, and Twilio may never retry them."""
        return self.needing_replay(failed=False, now=now)

    def needing_replay(self, *, failed: bool = True, unfinished: bool = True,
                       now: datetime.datetime | None = None) -> WebhookDeliveryQuerySet:
        """Failed deliveries, unfinished ones, or both."""
        return self.filter(incomplete(failed=failed, unfinished=unfinished, now=now))


def incomplete(*, failed: bool = True, unfinished: bool = True,
               now: datetime.datetime | None = None) -> models.Q:
    """The condition for deliveries whose event may not be stored: failed ones,
    unfinished ones, or both."""
    condition = models.Q(pk__in=[])
    if failed:
        condition |= models.Q(status=DeliveryStatus.FAILED)
    if unfinished:
        condition |= models.Q(status=DeliveryStatus.RECEIVED, received_at__lt=unfinished_cutoff(now))
    return condition


def unfinished_cutoff(now: datetime.datetime | None = None) -> datetime.datetime:
    """Deliveries received before this moment and still ``received`` are unfinished."""
    grace = datetime.timedelta(seconds=convlink_settings.DELIVERY_UNFINISHED_AFTER)
    return (now or timezone.now()) - grace


class WebhookDelivery(models.Model):
    """Every correctly signed delivery, recorded before it is processed.

    The row is written in its own transaction ahead of the processing, so a delivery
    whose processing fails (a database error, a bug) survives with its error and can
    be replayed; Twilio's own retry, or a replay, marks it processed. A row still
    ``received`` long after its arrival is unfinished: its worker died mid-processing
    (``WebhookDelivery.objects.unfinished()``). Forged requests are never stored:
    strangers must not be able to fill the disk.
    """

    event_type = models.CharField(_("event type"), max_length=64, blank=True)
    conversation_sid = models.CharField(max_length=34, blank=True, db_index=True)
    message_sid = models.CharField(max_length=34, blank=True, db_index=True)
    account_sid = models.CharField(max_length=34, blank=True)
    idempotency_token = models.CharField(
        _("idempotency token"), max_length=128, blank=True, db_index=True,
        help_text=_("I-Twilio-Idempotency-Token: the same across Twilio's retries of one delivery."),
    )
    retry_count = models.PositiveIntegerField(_("Twilio retry count"), null=True, blank=True)
    fingerprint = models.CharField(
        _("fingerprint"), max_length=64, blank=True, db_index=True,
        help_text=_("SHA-256 of the signed parameters but RetryCount: the same for Twilio's "
                    "retries of one delivery."),
    )
    params = models.JSONField(_("parameters"), default=dict)
    headers = models.JSONField(_("headers"), default=dict, help_text=_("The signature is redacted."))
    status = models.CharField(_("status"), max_length=10, choices=DeliveryStatus.choices,
                              default=DeliveryStatus.RECEIVED)
    received_at = models.DateTimeField(_("received at"), auto_now_add=True, db_index=True)
    processed_at = models.DateTimeField(_("processed at"), null=True, blank=True)
    attempts = models.PositiveIntegerField(_("processing attempts"), default=0)
    error = models.TextField(_("error"), blank=True)
    traceback = models.TextField(_("traceback"), blank=True)

    objects = WebhookDeliveryQuerySet.as_manager()

    class Meta:
        verbose_name = _("webhook delivery")
        verbose_name_plural = _("webhook deliveries")
        ordering = ["-received_at", "-pk"]
        indexes = [models.Index(fields=["status", "received_at"], name="convlink_delivery_status")]

    def __str__(self) -> str:
        # A rejected delivery may have no readable event type, nor any SID.
        subject = " ".join(filter(None, [str(self.event_type or _("Unreadable delivery")),
                                         self.message_sid or self.conversation_sid]))
        received = self.received_at
        if received is None:
            return f"{subject}: {self.get_status_display()}"
        if timezone.is_aware(received):
            received = timezone.localtime(received)
        return f"{subject}: {self.get_status_display()}, {received:%Y-%m-%d %H:%M:%S}"


class OptOut(models.Model):
    """One customer phone (E.164) that opted out of texts, or did and opted back in.

    Twilio refuses every send to a phone that texted STOP (error 21610) until it
    texts START; this row is the app's memory of that, so that nothing is sent that
    Twilio would refuse or that would reach a customer who asked for silence. The
    row stays after an opt-in (``opted_in_at``): how and when is the record.
    ``optouts`` writes it; ``is_opted_out``, ``opt_out`` and ``opt_in`` are the
    public helpers.
    """

    phone = models.CharField(_("phone"), max_length=32, unique=True)
    opted_out_at = models.DateTimeField(_("opted out at"))
    method = models.CharField(_("opted out by"), max_length=10, choices=OptOutMethod.choices)
    detail = models.CharField(_("keyword or error"), max_length=64, blank=True,
                              help_text=_("The keyword the customer texted, or Twilio's error code."))
    opted_in_at = models.DateTimeField(_("opted back in at"), null=True, blank=True,
                                       help_text=_("Blank while the phone is opted out."))
    opted_in_method = models.CharField(_("opted back in by"), max_length=10, choices=OptOutMethod.choices,
                                       blank=True)
    opted_in_detail = models.CharField(_("opt-in keyword"), max_length=64, blank=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("opt-out")
        verbose_name_plural = _("opt-outs")
        ordering = ["-opted_out_at"]

    def __str__(self) -> str:
        state = _("opted out") if self.is_opted_out else _("opted back in")
        return f"{self.phone} ({state})"

    @property
    def is_opted_out(self) -> bool:
        return self.opted_in_at is None


class WaitingReceipt(models.Model):
    """A delivery receipt that arrived before its message was stored.

    It can: the group chat's copies are recorded after Twilio accepted them, and
    Twilio may deliver the copy and report it first. The receipt waits here and is
    applied when its message row appears (``receipts.apply_waiting``), then deleted.
    """

    message_sid = models.CharField(max_length=34, db_index=True)
    participant_sid = models.CharField(max_length=34)
    account_sid = models.CharField(max_length=34, blank=True)
    receipt = models.JSONField(_("receipt"), default=dict)
    received_at = models.DateTimeField(_("received at"), auto_now_add=True)

    class Meta:
        verbose_name = _("receipt waiting for its message")
        verbose_name_plural = _("receipts waiting for their message")

    def __str__(self) -> str:
        return f"{self.message_sid} / {self.participant_sid}: {self.receipt.get('status', '')}"


class StoredMedia(models.Model):
    """One file a message carried (a tenant's photo of the leaking tap), brought from
    Twilio's Media Content Service into the site's storage (``media``).

    One row per media SID, made when the download is first planned and kept whatever
    happens: ``state`` says whether the file is stored, on its way, or why not. The
    file's name in storage is random (``storage.media_file_name``); ``filename`` is
    the sender's, for display only. Conversation and message are referred to by SID,
    as Twilio does, so the row outlives neither model's changes and needs no swappable
    foreign key.
    """

    media_sid = models.CharField(_("media SID"), max_length=34, unique=True)
    message_sid = models.CharField(_("message SID"), max_length=34, db_index=True)
    conversation_sid = models.CharField(_("conversation SID"), max_length=34, db_index=True)
    chat_service_sid = models.CharField(_("conversation service SID"), max_length=34, blank=True)
    account_sid = models.CharField(_("Twilio account"), max_length=34, blank=True)
    content_type = models.CharField(_("content type"), max_length=255, blank=True)
    filename = models.CharField(_("file name (as sent)"), max_length=255, blank=True)
    size = models.PositiveBigIntegerField(
        _("size in bytes"), null=True, blank=True,
        help_text=_("As Twilio declared it until the file is stored; then the bytes stored."))
    file = models.FileField(_("file"), storage=media_storage, upload_to=media_file_name, max_length=255,
                            blank=True)
    state = models.CharField(_("state"), max_length=12, choices=MediaState.choices,
                             default=MediaState.PENDING)
    stored_at = models.DateTimeField(_("stored at"), null=True, blank=True)
    attempts = models.PositiveIntegerField(_("failed attempts"), default=0)
    last_error = models.TextField(_("last error"), blank=True)
    # The HTTP status of the last failed answer: 401/403 mean the credentials.
    last_error_status = models.PositiveSmallIntegerField(_("last error's HTTP status"), null=True, blank=True)
    # When a failed download is due again, or until when a running one holds it.
    retry_at = models.DateTimeField(_("due at"), null=True, blank=True, db_index=True)
    created_at = models.DateTimeField(_("first seen"), auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("customer file")
        verbose_name_plural = _("customer files")
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["state", "retry_at"], name="convlink_media_due")]

    def __str__(self) -> str:
        return f"{self.filename or self.media_sid} ({self.get_state_display()})"

    @property
    def is_stored(self) -> bool:
        return self.state == MediaState.STORED and bool(self.file)

    @property
    def is_image(self) -> bool:
        """Whether the file may be shown inline: a raster image type (never SVG)."""
        return self.content_type.lower() in INLINE_TYPES
