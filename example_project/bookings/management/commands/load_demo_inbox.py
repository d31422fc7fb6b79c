"""Fill the admin's inbox with a working day's conversations; safe to run again.

    python manage.py load_demo_inbox

Four tenants of the demo data (``load_demo_data`` runs first), each in a state a
manager must see at a glance: Ben waits for an answer, our text to Chloe was not
delivered, Diego sent a photo of the damage (stored in MEDIA_ROOT, as the app's
download would store it), Emma texted STOP. Alice is left alone: the sample webhook
(``send_sample_webhook``) starts her conversation. The rows are written as the app
stores them, with made-up SIDs; nothing is sent to Twilio.
"""

from __future__ import annotations

import datetime
import struct
import zlib
from typing import Any

from django.core.files.base import ContentFile
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone
from messaging.models import TwilioConversation, TwilioMessage

from bookings.models import Apartment, Booking, Tenant
from django_twilio_convlink import opt_out
from django_twilio_convlink.models import StoredMedia
from django_twilio_convlink.phones import normalize_phone

DIEGO, EMMA = ("Diego Ruiz", "(305) 555-0177"), ("Emma Walsh", "(917) 555-0166")
ASSISTANT = "ASSISTANT"


def sid(prefix: str, n: int) -> str:
    return f"{prefix}{n:032x}"


def photo(width: int = 480, height: int = 360) -> bytes:
    """A real PNG: a water stain (brown) on a white ceiling."""
    rows = b"".join(b"\x00" + b"".join(
        b"\x8b\x5a\x2b" if (x - width // 2) ** 2 + (y - height // 2) ** 2 < 90 ** 2 else b"\xf2\xf2\xee"
        for x in range(width)) for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


class Command(BaseCommand):
    help = "Fill the admin's inbox with demo conversations (waiting, not delivered, a photo, opted out)."

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("load_demo_data", verbosity=0)
        now = timezone.now()
        with transaction.atomic():
            diego = Tenant.objects.update_or_create(name=DIEGO[0], defaults={"phone": DIEGO[1]})[0]
            emma = Tenant.objects.update_or_create(name=EMMA[0], defaults={"phone": EMMA[1]})[0]
            today = timezone.localdate()
            for tenant, apartment in ((diego, "Garden Loft 2A"), (emma, "Harbor View 4B")):
                stay = {"start_date": today - datetime.timedelta(days=1),
                        "end_date": today + datetime.timedelta(days=5)}
                home = Apartment.objects.get(name=apartment)
                Booking.objects.update_or_create(tenant=tenant, apartment=home, defaults=stay)
            threads = [
                (1, "Ben Carter", [(-190, "in", "Hi! We arrive Friday around 10am. Can we check in early?")]),
                (2, "Chloe Nguyen", [(-300, "in", "I think I left my charger in the bedroom."),
                                     (-280, "out", "Found it! We can post it to you: your address?")]),
                (3, DIEGO[0], [(-60, "in", "Water is coming through the kitchen ceiling. Photo attached."),
                               (-55, "out", "Thank you Diego, a plumber is on the way (ETA 30 min).")]),
                (4, EMMA[0], [(-900, "out", "Your door code for tomorrow is 4711."), (-880, "in", "STOP")]),
            ]
            for n, name, texts in threads:
                tenant = Tenant.objects.get(name=name)
                phone = normalize_phone(tenant.phone) or tenant.phone
                booking = Booking.objects.filter(tenant=tenant).order_by("-start_date").first()
                conversation, _ = TwilioConversation.objects.update_or_create(
                    conversation_sid=sid("CH", 0xD0 + n), defaults={
                        "friendly_name": name, "customer_phone": phone, "booking": booking,
                        "apartment": booking.apartment if booking else None, "link_method": "automatic",
                        "linked_at": now, "booking_lookup_at": now})
                for i, (minutes, way, body) in enumerate(texts):
                    inbound = way == "in"
                    when = now + datetime.timedelta(minutes=minutes)
                    failed = name == "Chloe Nguyen" and not inbound
                    message_sid = sid("IM", (0xD0 + n) * 16 + i)
                    TwilioMessage.objects.update_or_create(message_sid=message_sid, defaults={
                        "conversation": conversation, "author": phone if inbound else ASSISTANT, "body": body,
                        "direction": "inbound" if inbound else "outbound", "index": i, "date_created": when,
                        "source": "SMS" if inbound else "API",
                        "delivery_status": "" if inbound else ("undelivered" if failed else "delivered"),
                        "delivery_error_code": 30003 if failed else None,
                        "delivery_updated_at": None if inbound else when,
                        "media": ([{"Sid": sid("ME", 0xD3), "ContentType": "image/png",
                                    "Filename": "kitchen-ceiling.png", "Size": 0}]
                                  if name == DIEGO[0] and inbound else [])})
            self._store_photo(sid("ME", 0xD3), sid("IM", 0xD3 * 16), sid("CH", 0xD3), now)
        opt_out(EMMA[1], how="keyword", detail="STOP", origin="webhook")
        self.stdout.write(self.style.SUCCESS(
            "Demo inbox ready: Ben waits for an answer, our text to Chloe was not delivered, Diego sent a "
            "photo, Emma texted STOP."))

    def _store_photo(self, media_sid: str, message_sid: str, conversation_sid: str,
                     now: datetime.datetime) -> None:
        row, _ = StoredMedia.objects.get_or_create(media_sid=media_sid, defaults={
            "message_sid": message_sid, "conversation_sid": conversation_sid, "content_type": "image/png",
            "filename": "kitchen-ceiling.png"})
        if row.state == "stored" and row.file and row.file.storage.exists(row.file.name):
            return
        content = photo()
        row.file.save("ignored", ContentFile(content), save=False)
        row.state, row.size, row.stored_at = "stored", len(content), now
        row.save()
