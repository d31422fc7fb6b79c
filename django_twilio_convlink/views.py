"""The webhook endpoint, thin: refuse what is not Twilio's cheaply; the delivery log
(``deliveries.receive``) parses, records, processes and answers the rest."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.contrib.auth.decorators import login_not_required
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from .deliveries import receive
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

        outcome = receive(request)  # parsed, recorded, processed; logged and recorded there
        if outcome.http_status == 200:
            return HttpResponse(status=200)
        return _text(outcome.message, outcome.http_status)


def _text(message: str, status: int) -> HttpResponse:
    return HttpResponse(message, status=status, content_type="text/plain")
