from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    # The admin is the whole user interface of the demo: land there.
    path("", RedirectView.as_view(pattern_name="admin:index")),
    path("admin/", admin.site.urls),
    # Twilio's Conversations post-event webhook URL is <site>/twilio/webhook/.
    path("twilio/", include("django_twilio_convlink.urls")),
]
