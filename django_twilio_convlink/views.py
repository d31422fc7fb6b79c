"""The webhook endpoint: reject cheaply, parse fully, then write in one transaction."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.contrib.auth.decorators import login_not_required
from django.db import DatabaseError, transaction
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from .deliveries import process_delivery, record_delivery
from .events import InvalidPayload, RefusedEvent, parse_event
from .models import DeliveryStatus
from .signature import count_forged, refusal

logger = logging.getLogger(__name__)


class TwilioWebhookView(View):
    """Receives Twilio Conversations post-event webhooks.

    POST: 413 over MAX_REQUEST_BYTES and 403 when the signature fails (nothing stored;
    reason and URL logged; forged requests counted), 400 when a field is malformed
    or the event contradicts what is stored (the delivery is logged as rejected, no
    event data written), 403 when it is signed for another account than the
    conversation's (logged as refused, nothing written), 500 when processing
    fails (no event data written; the delivery row keeps the error; Twilio retries),
    else 200. HEAD answers 200 for Twilio's console probe; other methods get 405.

    The view is exempt from CSRF (Twilio has no token to send) and from
    LoginRequiredMiddleware, and it is ``non_atomic_requests``: under ATOMIC_REQUESTS
    a failed event would roll the delivery log row back with it, and the log exists
    precisely to survive that failure. The event's own transaction keeps each event
    all-or-nothing.
    """

    http_method_names = ["post", "head"]

    @classmethod
    def as_view(cls, **initkwargs: Any) -> Callable[..., HttpResponseBase]:
        view = super().as_view(**initkwargs)
        return csrf_exempt(login_not_required(transaction.non_atomic_requests(view)))

    def head(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return HttpResponse(status=200)

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        # Cheap rejections first: nothing is written for an oversized, unreadable or
        # unsigned request, and none is ever stored. Whatever it sends, the answer is
        # a 4xx and a WARNING: a stranger must not be able to page anyone with 5xx.
        refused = refusal(request)
        if refused:
            count_forged()
            logger.warning("Rejected Twilio webhook: %s", refused)
            return _text(refused.message, refused.status)

        try:
            event = parse_event(request.POST)
        except InvalidPayload as exc:
            logger.warning("Refused Twilio webhook %s: %s", request.POST.get("EventType", "?"), exc)
            try:
                record_delivery(request, status=DeliveryStatus.REJECTED, error=str(exc))
            except DatabaseError:
                logger.exception("Could not record a refused delivery")
            return _text(str(exc), 400)
        try:
            delivery = record_delivery(request)
        except DatabaseError:
            logger.exception("Could not record a Twilio %s delivery", event.event_type)
            return _text("Temporary failure; please retry.", 500)
        try:
            process_delivery(delivery, event)
        except RefusedEvent as exc:
            # Logged and recorded on the delivery by process_delivery; nothing written.
            return _text(str(exc), exc.http_status)
        except Exception:
            # Nothing of the event was written (its transaction rolled back); the
            # delivery row keeps the error for a replay, and a 5xx makes Twilio retry.
            logger.exception("Processing Twilio %s (delivery %s) failed", event.event_type, delivery.pk)
            return _text("Temporary failure; please retry.", 500)
        return HttpResponse(status=200)


def _text(message: str, status: int) -> HttpResponse:
    return HttpResponse(message, status=status, content_type="text/plain")
