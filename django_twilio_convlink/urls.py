from django.urls import path

from .views import TwilioWebhookView

app_name = "twilio_convlink"

webhook = TwilioWebhookView.as_view()

urlpatterns = [
    path("webhook/", webhook, name="webhook"),
    # Twilio does not follow redirects with a POST, so a console URL typed without the
    # slash must not meet APPEND_SLASH's 301: it is served, and validated, as typed.
    path("webhook", webhook),
]
