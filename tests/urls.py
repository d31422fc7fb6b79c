from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("twilio/", include("django_twilio_convlink.urls")),
]
