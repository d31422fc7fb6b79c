from django.urls import path

from .views import TwilioWebhookView

app_name = "twilio_convlink"

urlpatterns = [
    path("webhook/", TwilioWebhookView.as_view(), name="webhook"),
]
