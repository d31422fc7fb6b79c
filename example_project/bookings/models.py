"""The site's own domain: nothing here knows about Twilio.

The integration needs only what ``TWILIO_CONVLINK`` names: the booking model, the
path to the customer's phone ("tenant__phone"), the apartment foreign key and the
stay's dates. Phones are stored as people type them; the app normalizes them.
"""

from django.db import models


class Apartment(models.Model):
    name = models.CharField(max_length=100)
    address = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Tenant(models.Model):
    name = models.CharField(max_length=100)
    phone = models.CharField(max_length=40, blank=True, help_text="Any format: (415) 555-0142, +1 415...")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Booking(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="bookings")
    apartment = models.ForeignKey(Apartment, on_delete=models.CASCADE, related_name="bookings")
    start_date = models.DateField()
    end_date = models.DateField()

    class Meta:
        ordering = ["-start_date"]

    def __str__(self) -> str:
        return f"{self.tenant} at {self.apartment}, {self.start_date} to {self.end_date}"
