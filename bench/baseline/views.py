"""The throughput baseline: what any Twilio webhook must at least do, nothing more."""

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt
from twilio.request_validator import RequestValidator

from bench.baseline.models import Ping


@csrf_exempt
@login_not_required
def baseline_webhook(request):
    validator = RequestValidator(settings.TWILIO_CONVLINK["AUTH_TOKEN"])
    if not validator.validate(request.build_absolute_uri(), request.POST,
                              request.headers.get("X-Twilio-Signature", "")):
        return HttpResponse(status=403)
    Ping.objects.create(message_sid=request.POST.get("MessageSid", ""))
    return HttpResponse(status=200)
