"""Rebuild the normalized phone index of all bookings.

Run it once after installing the app on a site that already has bookings, and after
changes that bypass post_save on rows already indexed: a ``QuerySet.update()`` (or raw
SQL) of a tenant's or a booking's phone, bookings deleted with raw SQL::

    manage.py rebuild_booking_phones

Bookings that are merely missing from the index (``bulk_create``, ``loaddata``, raw
``INSERT``) need no rebuild: ``update_conversation_links`` and the admin's relink
action add them first. ``update_conversation_links --reindex`` does this same rebuild
before linking.
"""

from typing import Any

from django.core.management.base import BaseCommand

from ...linking import rebuild_booking_phones


class Command(BaseCommand):
    help = "Rebuild the E.164 phone index that booking lookups use."

    def handle(self, *args: Any, **options: Any) -> None:
        written = rebuild_booking_phones()
        self.stdout.write(self.style.SUCCESS(f"Indexed {written} booking phone(s)."))
