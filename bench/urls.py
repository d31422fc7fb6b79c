from django.urls import include, path

from bench.baseline.views import baseline_webhook, hand_written_webhook

urlpatterns = [
    path("twilio/", include("django_twilio_convlink.urls")),
    # The cheapest possible webhook: signature check and one INSERT (the throughput baseline).
    path("baseline/webhook/", baseline_webhook),
    # What a site would write by hand from the seed (bench/baseline/views.py).
    path("baseline/hand-written/", hand_written_webhook),
]
