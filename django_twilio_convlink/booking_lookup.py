"""The booking lookup under the import path the README has documented since the first
release: ``booking_lookup.get_booking_from_phone(phone)``. It lives in
``linking.lookup``, beside the phone index it reads."""

from .linking.lookup import get_booking_from_phone

__all__ = ["get_booking_from_phone"]
