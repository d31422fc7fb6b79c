"""A site whose names differ from the example's on purpose: nothing in the app may
assume "Booking", "tenant__phone" or "start_date"."""

from django.db import models

from django_twilio_convlink.models import AbstractTwilioConversation, AbstractTwilioMessage


class Property(models.Model):
    title = models.CharField(max_length=100)

    def __str__(self) -> str:
        return self.title


class Guest(models.Model):
    full_name = models.CharField(max_length=100)
    mobile = models.CharField(max_length=40, blank=True)

    def __str__(self) -> str:
        return self.full_name


class Reservation(models.Model):
    guest = models.ForeignKey(Guest, null=True, on_delete=models.SET_NULL, related_name="reservations")
    unit = models.ForeignKey(Property, null=True, on_delete=models.SET_NULL, related_name="reservations")
    check_in = models.DateField()
    check_out = models.DateField()

    def __str__(self) -> str:
        return f"{self.guest} {self.check_in}..{self.check_out}"


class ChatConversation(AbstractTwilioConversation):
    # A field of the site's own, as a signal receiver might set.
    note = models.CharField(max_length=200, blank=True)


class ChatMessage(AbstractTwilioMessage):
    # A field of the site's own, as a signal receiver might set.
    notified = models.BooleanField(default=False)
