"""The delivery log: record each signed delivery first, process it second, keep the
failures, replay them later.

Order of work for one delivery (the view's, a replay's):

1. ``record_delivery``: one INSERT, committed on its own (the view is
   ``non_atomic_requests``), so the delivery exists whatever happens next;
2. ``process_delivery``: the event's own atomic block (``handlers.handle_event``),
   whose last statement is one UPDATE marking the delivery processed (and earlier
   failed copies of the same delivery with it): the mark commits with the event;
3. on failure, one UPDATE: failed with the error and traceback, and ``receive``
   answers 500 so Twilio retries.

This module is where each outcome of a delivery is logged and recorded (``receive``
for the view, ``replay`` for the command and the admin): rejected (malformed, or
contradicting what is stored), refused (another account's conversation), failed,
processed. The exceptions say which is which (``exceptions``: each one's HTTP status
and delivery status).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import Any

from django.db import DatabaseError, connection, connections, router
from django.db.models import F, Q
from django.http import HttpRequest, QueryDict
from django.utils import timezone

from . import signals
from .accounts import as_signed
from .choices import DeliveryStatus
from .events import Event, canonical_sid, parse_event
from .exceptions import InvalidPayload, RefusedEvent
from .handlers import handle_event
from .inserts import insert
from .models import WebhookDelivery, incomplete
from .signature import SIGNATURE_HEADER, SIGNATURE_SETTINGS_HEADER

logger = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "I-Twilio-Idempotency-Token"
KEPT_HEADERS = (IDEMPOTENCY_HEADER, SIGNATURE_HEADER, SIGNATURE_SETTINGS_HEADER,
                "User-Agent", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host")
REDACTED_HEADERS = {SIGNATURE_HEADER}


def _clean(value: str, limit: int | None = None) -> str:
    # No database stores NUL in text (PostgreSQL refuses it even inside JSON); a
    # malformed delivery must still be recordable so its 400 can be explained.
    value = value.replace("\x00", "\ufffd")
    return value[:limit] if limit else value


def _params(data: QueryDict) -> dict[str, str | list[str]]:
    return {_clean(key): [_clean(v) for v in values] if len(values) > 1 else _clean(values[0])
            for key, values in data.lists()}


def _sid(post: QueryDict, name: str) -> str:
    # In the spelling the events use (canonical_sid): the log is searched and joined
    # by SID (record_conversation_accounts, the admin), and Twilio may send either case.
    value = _clean(post.get(name, ""), 34)
    return canonical_sid(value) if value[:2].isalpha() and value[:2].isupper() else value


TEMPORARY_FAILURE = "Temporary failure; please retry."


@dataclass(frozen=True)
class Outcome:
    """What came of one delivery: its ``status`` in the log (a ``DeliveryStatus``) and
    the answer Twilio gets (``http_status``, ``message``)."""

    status: str
    http_status: int
    message: str = ""


def receive(request: HttpRequest) -> Outcome:
    """Parse, record and process one signed delivery; log and record its outcome.

    A malformed one is recorded as rejected (400, the reason as the answer); one that
    contradicts what is stored or is another account's is recorded as rejected or
    refused by ``process_delivery`` (400 or 403); a failure to record or to process
    is logged with its traceback and answered 500, which Twilio retries; nothing of
    the event is written in any of these cases.
    """
    try:
        event = parse_event(request.POST)
    except InvalidPayload as exc:
        logger.warning("Rejected Twilio %s: %s", request.POST.get("EventType", "?"), exc)
        try:
            record_delivery(request, status=exc.delivery_status, error=str(exc))
        except DatabaseError:
            logger.exception("Could not record a rejected delivery")
        return Outcome(exc.delivery_status, exc.http_status, str(exc))
    try:
        delivery = record_delivery(request)
    except DatabaseError:
        logger.exception("Could not record a Twilio %s delivery", event.event_type)
        return Outcome(DeliveryStatus.FAILED, 500, TEMPORARY_FAILURE)
    try:
        process_delivery(delivery, event)
    except RefusedEvent as exc:
        return Outcome(exc.delivery_status, exc.http_status, str(exc))  # logged by mark_refused
    except Exception:
        # Nothing of the event was written (its transaction rolled back); the delivery
        # row keeps the error for a replay, and a 5xx makes Twilio retry.
        logger.exception("Processing Twilio %s (delivery %s) failed", event.event_type, delivery.pk)
        return Outcome(DeliveryStatus.FAILED, 500, TEMPORARY_FAILURE)
    return Outcome(DeliveryStatus.PROCESSED, 200)


def record_delivery(request: HttpRequest, *, status: str = DeliveryStatus.RECEIVED,
                    error: str = "") -> WebhookDelivery:
    """Store a signed delivery (one INSERT). ``status``/``error`` record a rejection."""
    post = request.POST
    headers = {name: ("[redacted]" if name in REDACTED_HEADERS else _clean(request.headers[name], 500))
               for name in KEPT_HEADERS if name in request.headers}
    retry_count = post.get("RetryCount", "")
    params = _params(post)
    delivery = WebhookDelivery(
        event_type=_clean(post.get("EventType", ""), 64),
        conversation_sid=_sid(post, "ConversationSid"),
        message_sid=_sid(post, "MessageSid"),
        account_sid=_sid(post, "AccountSid"),
        idempotency_token=_clean(request.headers.get(IDEMPOTENCY_HEADER, ""), 128),
        retry_count=int(retry_count) if retry_count.isascii() and retry_count.isdigit()
        and len(retry_count) < 9 else None,
        params=params,
        fingerprint=fingerprint(params),
        headers=headers,
        status=status,
        error=error,
        attempts=0 if status == DeliveryStatus.REJECTED else 1,
    )
    insert(delivery, using=router.db_for_write(WebhookDelivery))
    return delivery


def fingerprint(params: Any) -> str:
    """SHA-256 of a delivery's signed parameters but RetryCount (which Twilio's
    retries count up): equal for the copies of one delivery, different for anything
    else."""
    if not isinstance(params, dict):
        return ""
    signed = {k: v for k, v in params.items() if k != "RetryCount"}
    return hashlib.sha256(json.dumps(signed, sort_keys=True, ensure_ascii=False).encode(
        "utf-8", "surrogatepass")).hexdigest()


def _same_delivery(delivery: WebhookDelivery) -> Q:
    """This delivery and its earlier copies that never completed (failed, or still
    received: a worker killed or timed out mid-processing), which its success settles.

    A copy has the same signed parameters but RetryCount (``fingerprint``). The
    idempotency token is not enough: it is a header, outside the signature, so anyone
    able to replay a genuine delivery could name another delivery's token and make
    that one look processed. Twilio's first attempt (RetryCount 0) received once has
    no earlier copy: the plain primary key keeps the commonest UPDATE the cheapest.
    """
    if _first_attempt(delivery):
        return Q(pk=delivery.pk)
    copies = delivery.fingerprint or fingerprint(delivery.params)
    return Q(pk=delivery.pk) | Q(fingerprint=copies,
                                 status__in=[DeliveryStatus.FAILED, DeliveryStatus.RECEIVED])


def _first_attempt(delivery: WebhookDelivery) -> bool:
    """Twilio's first attempt, received once: no earlier copy to settle."""
    return delivery.retry_count == 0 and delivery.attempts <= 1


def process_delivery(delivery: WebhookDelivery, event: Event, *, origin: str = "webhook") -> None:
    """Apply the event; mark the delivery processed, or refused / failed and re-raise.

    ``BaseException``, not ``Exception``: gunicorn aborts a worker that runs out of
    time with SystemExit (and a signal can raise KeyboardInterrupt) in the middle of
    processing; the row must say so before the process goes. Only SIGKILL leaves it
    ``received``, to be found as unfinished later.

    Signals: ``event_received`` after the commit of a processed delivery,
    ``delivery_failed`` once its failure is recorded (not for an interrupted process,
    which is on its way out). ``origin`` ("webhook", "replay") goes to the message
    signals.
    """
    event = as_signed(event, shared_key=signed_with_shared_key(delivery))
    try:
        handle_event(event, mark_processed=partial(_mark_processed, delivery), origin=origin)
    except RefusedEvent as exc:
        mark_refused(delivery, exc)
        raise
    except Exception as exc:
        mark_failed(delivery, exc)
        signals.send_robust(signals.delivery_failed, WebhookDelivery, delivery=delivery, exception=exc)
        raise
    except BaseException as exc:
        mark_failed(delivery, exc)
        raise


def signed_with_shared_key(delivery: WebhookDelivery) -> bool:
    """Whether the delivery was signed with a webhook shared key: its signature
    settings header is kept (``KEPT_HEADERS``), and with it present the signature
    check accepts nothing but a shared key."""
    return isinstance(delivery.headers, dict) and SIGNATURE_SETTINGS_HEADER in delivery.headers


def _mark_processed(delivery: WebhookDelivery) -> None:
    now = timezone.now()
    if _first_attempt(delivery):
        # Twilio's first attempt, the commonest case by far (_same_delivery: the row
        # alone): SQL written once per process rather than an UPDATE the ORM compiles
        # per webhook. The values go through the fields' own preparation, as the
        # ORM's update() does, on the database it would write to.
        alias = router.db_for_write(WebhookDelivery)
        sql, prepare = _processed_update(alias)
        db = connections[alias]
        with db.cursor() as cursor:
            cursor.execute(sql, prepare(db, now, delivery.pk))
    else:
        WebhookDelivery.objects.filter(_same_delivery(delivery)).update(
            status=DeliveryStatus.PROCESSED, processed_at=now)
    signals.send_after_commit(signals.event_received, WebhookDelivery, delivery=delivery,
                              event_type=delivery.event_type, params=delivery.params)


@lru_cache(maxsize=8)
def _processed_update(alias: str) -> tuple[str, Callable[[Any, datetime.datetime, Any], list[Any]]]:
    """The UPDATE that marks one delivery processed on database ``alias``, and what
    turns (connection, when, primary key) into its parameters."""
    db = connections[alias]
    opts = WebhookDelivery._meta
    status, processed_at, pk = opts.get_field("status"), opts.get_field("processed_at"), opts.pk
    assert pk is not None
    columns = [db.ops.quote_name(f.column) for f in (status, processed_at, pk) if f.column]
    assert len(columns) == 3  # fields without a column of their own have None
    sql = (f"UPDATE {db.ops.quote_name(opts.db_table)} SET {columns[0]} = %s, {columns[1]} = %s"
           f" WHERE {columns[2]} = %s")

    def parameters(db: Any, when: datetime.datetime, key: Any) -> list[Any]:
        return [status.get_db_prep_save(DeliveryStatus.PROCESSED, db),
                processed_at.get_db_prep_save(when, db), pk.get_db_prep_value(key, db)]

    return sql, parameters


def mark_refused(delivery: WebhookDelivery, exc: RefusedEvent) -> None:
    """Record why a well-formed event was not applied (status rejected or refused)."""
    logger.warning("%s Twilio %s (delivery %s): %s", exc.delivery_status.capitalize(), delivery.event_type,
                   delivery.pk, exc.detail)
    WebhookDelivery.objects.filter(pk=delivery.pk).exclude(status=DeliveryStatus.PROCESSED).update(
        status=exc.delivery_status, error=exc.detail[:2000], traceback="")


def mark_failed(delivery: WebhookDelivery, exc: BaseException) -> None:
    values = {"status": DeliveryStatus.FAILED, "error": f"{type(exc).__name__}: {exc}"[:2000],
              "traceback": "".join(traceback.format_exception(exc))[-20000:]}
    for _ in range(2):
        try:
            # Not over "processed": a retry of this delivery may have succeeded and
            # settled it while this copy was failing (_same_delivery).
            WebhookDelivery.objects.filter(pk=delivery.pk).exclude(
                status=DeliveryStatus.PROCESSED).update(**values)
            return
        except DatabaseError:
            # The failure may have been the connection itself (killed, restarted):
            # drop it so the next statement opens a fresh one.
            connection.close()
    logger.error("Could not record the failure of delivery %s", delivery.pk)


def event_of(delivery: WebhookDelivery) -> Event:
    """The event a stored delivery carries (raises InvalidPayload, also when a site or
    an admin edited the stored parameters into something no request can carry)."""
    if not isinstance(delivery.params, dict):
        raise InvalidPayload("The stored parameters are not a mapping of field names to values.")
    data = QueryDict(mutable=True)
    for key, value in delivery.params.items():
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str) for v in values):
            raise InvalidPayload(f"The stored parameter {key!r} is not text.")
        data.setlist(key, values)
    return parse_event(data)


@dataclass
class ReplayReport:
    processed: list[int] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)


def replay(deliveries: Iterable[WebhookDelivery], *, dry_run: bool = False) -> ReplayReport:
    """Process stored deliveries again, one by one, going on past failures: a
    malformed or refused delivery is reported (and so marked) as rejected, any other
    error as failed."""
    report = ReplayReport()
    for delivery in deliveries:
        try:
            event = event_of(delivery)
        except InvalidPayload as exc:
            report.rejected.append((delivery.pk, str(exc)))
            if not dry_run:
                logger.warning("Rejected stored delivery %s on replay: %s", delivery.pk, exc)
                WebhookDelivery.objects.filter(pk=delivery.pk).update(status=exc.delivery_status,
                                                                      error=str(exc))
            continue
        if dry_run:
            report.processed.append(delivery.pk)
            continue
        WebhookDelivery.objects.filter(pk=delivery.pk).update(attempts=F("attempts") + 1)
        delivery.attempts += 1  # a replay may settle earlier copies too (_same_delivery)
        try:
            process_delivery(delivery, event, origin="replay")
        except RefusedEvent as exc:
            report.rejected.append((delivery.pk, exc.detail))
        except Exception as exc:
            # Recorded on the row by process_delivery; the report says it, a replay of
            # thousands must not log a traceback for each.
            report.failed.append((delivery.pk, f"{type(exc).__name__}: {exc}"))
        else:
            report.processed.append(delivery.pk)
    return report


def prune(older_than_days: int, *, include_failed: bool = False, dry_run: bool = False) -> int:
    """Delete processed, rejected and refused deliveries (and failed and unfinished
    ones if asked) received more than ``older_than_days`` ago. Returns how many (would)
    go. Raises OverflowError when the cutoff is before year 1."""
    now = timezone.now()
    cutoff = now - datetime.timedelta(days=older_than_days)
    done = Q(status__in=[DeliveryStatus.PROCESSED, DeliveryStatus.REJECTED, DeliveryStatus.REFUSED])
    if include_failed:
        # Unfinished like failed; a delivery received moments ago may be in processing
        # right now (--days 0), so "received" ones go only once they are unfinished.
        done |= incomplete(now=now)
    qs = WebhookDelivery.objects.filter(received_at__lt=cutoff).filter(done)
    if dry_run:
        return qs.count()
    return qs.delete()[0]
