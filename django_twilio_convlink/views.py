"""The webhook endpoint: reject cheaply, parse fully, then write in one transaction."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.contrib.auth.decorators import login_not_required
from django.db import DatabaseError, transaction
from django.http import HttpRequest, HttpResponse
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from .events import InvalidPayload, parse_event
from .handlers import handle_event
from .signature import signature_failure, webhook_url

logger = logging.getLogger(__name__)


class TwilioWebhookView(View):
    """Receives Twilio Conversations post-event webhooks.

    POST: 403 when the signature fails (nothing written, reason and URL logged), 400
    when a field is malformed (nothing written), 500 when the database fails (nothing
    written; Twilio retries), else 200. HEAD answers 200 for Twilio's console probe;
    other methods get 405.

    The view is exempt from CSRF (Twilio has no token to send) and from
    LoginRequiredMiddleware, and it is ``non_atomic_requests``: with ATOMIC_REQUESTS
    an error would otherwise roll back whatever the app logs about the delivery, and
    the app's own transaction already makes each event all-or-nothing.
    """

    http_method_names = ["post", "head"]

    @classmethod
    def as_view(cls, **initkwargs: Any) -> Callable[..., HttpResponse]:
        view = super().as_view(**initkwargs)
        return csrf_exempt(login_not_required(transaction.non_atomic_requests(view)))

    def head(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return HttpResponse(status=200)

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        url = webhook_url(request)
        failure = signature_failure(request, url)
        if failure:
            logger.warning("Rejected Twilio webhook: %s (validated against %s)", failure, url)
            return HttpResponse("Invalid Twilio signature.", status=403, content_type="text/plain")
        try:
            event = parse_event(request.POST)
        except InvalidPayload as exc:
            logger.warning("Refused Twilio webhook %s: %s", request.POST.get("EventType", "?"), exc)
            return HttpResponse(str(exc), status=400, content_type="text/plain")
        try:
            handle_event(event)
        except DatabaseError:
            # Nothing was written (handle_event is atomic); a 5xx makes Twilio retry.
            logger.exception("Database error while storing Twilio %s", event.event_type)
            return HttpResponse("Temporary failure; please retry.", status=500,
                                content_type="text/plain")
        return HttpResponse(status=200)
