"""The throughput baselines: what any Twilio webhook must at least do, and what a site
would write by hand from the seed instead of installing the app."""

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt
from twilio.request_validator import RequestValidator

from bench.baseline.models import Ping, PlainConversation, PlainMessage
from tests.testapp.models import Reservation


def _signed(request) -> bool:
    validator = RequestValidator(settings.TWILIO_CONVLINK["AUTH_TOKEN"])
    return validator.validate(request.build_absolute_uri(), request.POST,
                              request.headers.get("X-Twilio-Signature", ""))


@csrf_exempt
@login_not_required
def baseline_webhook(request):
    """The bare view: the signature, one INSERT."""
    if not _signed(request):
        return HttpResponse(status=403)
    Ping.objects.create(message_sid=request.POST.get("MessageSid", ""))
    return HttpResponse(status=200)


SYSTEM_AUTHORS = {"ASSISTANT", "+15612205252", "+13153524379"}


@csrf_exempt
@login_not_required
def hand_written_webhook(request):
    """The view a site writes from the seed, plainly with the ORM: the signature, the
    conversation and the message each get_or_create'd by SID, the direction by
    membership in a list of system phones, and on a customer's first message the
    booking looked up by exact phone. No delivery log, no dedupe under races, no
    normalization, no signals."""
    if not _signed(request):
        return HttpResponse(status=403)
    data = request.POST
    if data.get("EventType") != "onMessageAdded":
        return HttpResponse(status=200)
    conversation, _ = PlainConversation.objects.get_or_create(conversation_sid=data["ConversationSid"])
    author = data.get("Author", "")
    inbound = author not in SYSTEM_AUTHORS
    _, created = PlainMessage.objects.get_or_create(
        message_sid=data["MessageSid"],
        defaults={"conversation": conversation, "author": author, "body": data.get("Body", ""),
                  "direction": "inbound" if inbound else "outbound"})
    if created and inbound and not conversation.customer_phone:
        conversation.customer_phone = author
        conversation.booking = Reservation.objects.filter(guest__mobile=author).order_by("-check_in").first()
        conversation.save(update_fields=["customer_phone", "booking"])
    return HttpResponse(status=200)
