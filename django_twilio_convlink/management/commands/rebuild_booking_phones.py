"""Rebuild the normalized phone index of all bookings.

Run it once after installing the app on a site that already has bookings, and after
bulk imports (``bulk_create``, ``QuerySet.update``, raw SQL, ``loaddata``) that save
bookings or tenants without sending post_save::

    manage.py rebuild_booking_phones
"""

from typing import Any

from django.core.management.base import BaseCommand

from ...linking import rebuild_booking_phones


class Command(BaseCommand):
    help = "Rebuild the E.164 phone index that booking lookups use."

    def handle(self, *args: Any, **options: Any) -> None:
        written = rebuild_booking_phones()
        self.stdout.write(self.style.SUCCESS(f"Indexed {written} booking phone(s)."))
