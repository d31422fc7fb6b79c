"""Customers who opted out of texts, and back in.

With Advanced Opt-Out (the default on long codes and messaging services) Twilio
refuses every send to a phone that texted STOP, with error 21610, until it texts
START. The app keeps the same record (``OptOut``, one row per E.164 phone) so that it
sends nothing Twilio would refuse or that would reach a customer who asked for
silence. A phone is opted out:

* by keyword: a customer's message whose whole body, trimmed and case-insensitive,
  is one of OPT_OUT_KEYWORDS (OPT_IN_KEYWORDS opts it back in). Written by an insert
  step (``opt_out_by_keyword``, registered by ``apps``), so the opt-out commits with the
  message that carried it: a process killed right after that commit cannot leave a
  forward that texts the customer who just wrote STOP;
* by error: Twilio answered a send with 21610 (``OPTED_OUT_ERROR``);
* by hand: ``opt_out`` / ``opt_in`` (the admin's actions, a site's code).

Every sending path asks ``refuse_if_opted_out`` right before it calls Twilio, which
raises ``CustomerOptedOut``. Each change sends ``customer_opted_out`` or
``customer_opted_in`` after the commit; a change that changes nothing (STOP twice)
sends nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import lru_cache

from django.db import IntegrityError, transaction
from django.dispatch import Signal
from django.utils import timezone

from .choices import OptOutMethod
from .conf import convlink_settings
from .exceptions import CustomerOptedOut
from .models import AbstractTwilioConversation, AbstractTwilioMessage, OptOut
from .phones import customer_phone_from_author, normalize_phone
from .signals import HISTORY, customer_opted_in, customer_opted_out, send_after_commit

logger = logging.getLogger(__name__)

OPTED_OUT_ERROR = 21610
OUT, IN = "out", "in"
# Longer than any keyword: a message this long cannot be one, and costs no more.
_LONGEST_KEYWORD = 64


@lru_cache(maxsize=8)
def _keywords(opt_out: tuple[str, ...], opt_in: tuple[str, ...]) -> dict[str, str]:
    words = {str(word).strip().casefold(): IN for word in opt_in}
    words.update({str(word).strip().casefold(): OUT for word in opt_out})  # out wins a clash
    return words


def keyword_in(body: str) -> tuple[str, str] | None:
    """("out" or "in", the keyword) when ``body`` is an opt-out or opt-in keyword."""
    if not body or len(body) > _LONGEST_KEYWORD:
        return None
    word = body.strip().casefold()
    kind = _keywords(tuple(convlink_settings.OPT_OUT_KEYWORDS or ()),
                     tuple(convlink_settings.OPT_IN_KEYWORDS or ())).get(word)
    return (kind, word.upper()) if kind else None


def _phone(phone: str) -> str:
    normalized = normalize_phone(phone)
    if normalized is None:
        raise ValueError(f"{phone!r} is not a phone number.")
    return normalized


def is_opted_out(phone: str) -> bool:
    """Whether ``phone`` (any format) is opted out now. One query; False for a value
    that is no phone number."""
    normalized = normalize_phone(phone)
    return normalized is not None and OptOut.objects.filter(phone=normalized, opted_in_at=None).exists()


def refuse_if_opted_out(phone: str) -> None:
    """Raise CustomerOptedOut when ``phone`` is opted out: the check every sending path
    makes right before it calls Twilio (a send queued before a STOP must not go out
    after it)."""
    normalized = normalize_phone(phone)
    if normalized is None:
        return
    row = OptOut.objects.filter(phone=normalized, opted_in_at=None).only("method", "detail").first()
    if row is not None:
        raise CustomerOptedOut(normalized, detail=describe(row))


def describe(row: OptOut) -> str:
    if row.method == OptOutMethod.KEYWORD:
        return f"texted {row.detail}" if row.detail else "texted an opt-out keyword"
    if row.method == OptOutMethod.ERROR:
        return f"Twilio error {row.detail or OPTED_OUT_ERROR}"
    return "opted out by a person"


def opt_out(phone: str, *, how: str = OptOutMethod.ADMIN, detail: str = "", origin: str = "admin") -> bool:
    """Opt ``phone`` (any format) out: nothing more is sent to it. Returns False when
    it already was. Raises ValueError for a value that is no phone number."""
    return record_opt_out(_phone(phone), how=how, detail=detail, origin=origin)


def opt_in(phone: str, *, how: str = OptOutMethod.ADMIN, detail: str = "", origin: str = "admin") -> bool:
    """Opt ``phone`` (any format) back in. Returns False when it was not opted out.
    The customer's messages skipped meanwhile stay skipped (``retry_group_chats
    --include-permanent`` forwards them)."""
    return record_opt_in(_phone(phone), how=how, detail=detail, origin=origin)


def record_opt_out(phone: str, *, how: str, detail: str = "", origin: str) -> bool:
    """``opt_out`` for a phone already in E.164; in the caller's transaction if any."""
    now = timezone.now()
    with transaction.atomic():
        row = OptOut.objects.select_for_update().filter(phone=phone).first()
        if row is None:
            try:
                with transaction.atomic():
                    OptOut.objects.create(phone=phone, opted_out_at=now, method=how, detail=detail[:64])
            except IntegrityError:
                # A concurrent opt-out of the same phone committed first.
                row = OptOut.objects.select_for_update().get(phone=phone)
        if row is not None:
            if row.is_opted_out:
                return False
            OptOut.objects.filter(pk=row.pk).update(
                opted_out_at=now, method=how, detail=detail[:64], opted_in_at=None,
                opted_in_method="", opted_in_detail="", updated_at=now)
        _announce(customer_opted_out, phone, how, detail, origin)
    return True


def record_opt_in(phone: str, *, how: str, detail: str = "", origin: str) -> bool:
    """``opt_in`` for a phone already in E.164; in the caller's transaction if any."""
    now = timezone.now()
    with transaction.atomic():
        changed = OptOut.objects.filter(phone=phone, opted_in_at=None).update(
            opted_in_at=now, opted_in_method=how, opted_in_detail=detail[:64], updated_at=now)
        if changed:
            _announce(customer_opted_in, phone, how, detail, origin)
    return bool(changed)


def _announce(signal: Signal, phone: str, how: str, detail: str, origin: str) -> None:
    verb = "out" if signal is customer_opted_out else "back in"
    logger.info("Customer %s opted %s (%s%s, %s)", phone, verb, how, f" {detail}" if detail else "", origin)
    send_after_commit(signal, OptOut, phone=phone, how=how, origin=origin)


def opt_out_by_keyword(message: AbstractTwilioMessage, conversation: AbstractTwilioConversation,
                       origin: str) -> Callable[[], None] | None:
    """The insert step: a customer's message that is a keyword changes their opt-out
    state in the message's own transaction, after its INSERT. Any other message
    costs a length check, no statement. History (origin "sync") changes no opt-out:
    an old STOP would opt out now a customer who may have texted START since, in a
    conversation synced later; Twilio's own 21610 teaches the app (``record_opt_out``)."""
    if origin == HISTORY:
        return None
    found = keyword_in(message.body)
    if found is None:
        return None
    phone = customer_phone_from_author(message.author)
    if phone is None:
        return None
    kind, keyword = found
    record = record_opt_out if kind == OUT else record_opt_in

    def after_insert() -> None:
        record(phone, how=OptOutMethod.KEYWORD, detail=keyword, origin=origin)

    return after_insert
