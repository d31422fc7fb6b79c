"""Create the demo apartments, tenants and bookings; safe to run any number of times.

    python manage.py load_demo_data

Dates are relative to today, so a rerun on a later day moves the stays back to
"staying now", "upcoming" and "past". Alice's phone is the customer author of the
sample webhook (+14155550142), typed the way a person would: "(415) 555-0142".
send_sample_webhook's default text is about the apartment of the stay the app links
the sender to, so each tenant reports a problem in their own.
"""

from __future__ import annotations

import datetime
from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from bookings.models import Apartment, Booking, Tenant

APARTMENTS = {
    "Harbor View 4B": "12 Harbor Street, Apt 4B, San Francisco, CA",
    "Garden Loft 2A": "310 Elm Avenue, Apt 2A, Brooklyn, NY",
    "Sunset Studio 7": "88 Ocean Drive, Studio 7, Miami Beach, FL",
}

# One format each, all of which the app reads as the same kind of E.164 number.
TENANTS = {
    "Alice Moreno": "(415) 555-0142",
    "Ben Carter": "+1 212-555-0199",
    "Chloe Nguyen": "646.555.0123",
}

# (tenant, apartment, start and end in days from today)
BOOKINGS = [
    ("Alice Moreno", "Harbor View 4B", -3, 4),  # staying now: her messages link here
    ("Alice Moreno", "Sunset Studio 7", -45, -38),  # her earlier stay, which must lose
    ("Ben Carter", "Garden Loft 2A", 10, 17),  # upcoming
    ("Chloe Nguyen", "Sunset Studio 7", -20, -13),  # past
]


class Command(BaseCommand):
    help = "Create (or refresh) the demo apartments, tenants and bookings."

    def handle(self, *args: Any, **options: Any) -> None:
        # The app's "today" (timezone.localdate) decides which stay is current, so the
        # demo dates use the same one.
        today = timezone.localdate()
        # One transaction: the app indexes each booking's phone after the commit, so a
        # half-loaded demo never leaves the index out of step with the bookings.
        with transaction.atomic():
            apartments = {
                name: Apartment.objects.update_or_create(name=name, defaults={"address": address})[0]
                for name, address in APARTMENTS.items()
            }
            tenants = {
                name: Tenant.objects.update_or_create(name=name, defaults={"phone": phone})[0]
                for name, phone in TENANTS.items()
            }
            for tenant, apartment, start, end in BOOKINGS:
                booking, created = Booking.objects.update_or_create(
                    tenant=tenants[tenant],
                    apartment=apartments[apartment],
                    defaults={
                        "start_date": today + datetime.timedelta(days=start),
                        "end_date": today + datetime.timedelta(days=end),
                    },
                )
                if options["verbosity"] >= 2:
                    self.stdout.write(f"{'Created' if created else 'Updated'} {booking}")
        self.stdout.write(self.style.SUCCESS(
            f"Demo data ready: {len(APARTMENTS)} apartments, {len(TENANTS)} tenants, "
            f"{len(BOOKINGS)} bookings (Alice Moreno, (415) 555-0142, is staying now)."
        ))
