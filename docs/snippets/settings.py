import os

TWILIO_CONVLINK = {
    "ACCOUNT_SID": os.environ.get("TWILIO_ACCOUNT_SID", ""),
    # Twilio signs every webhook with the account's Auth Token.
    "AUTH_TOKEN": os.environ.get("TWILIO_AUTH_TOKEN", ""),
    "TWILIO_PHONE": "+13153524379",  # your Twilio number
    "MANAGER_PHONE": "+15612205252",  # the manager's own phone
    "CONVERSATION_MODEL": "messaging.TwilioConversation",
    "MESSAGE_MODEL": "messaging.TwilioMessage",
    "BOOKING_MODEL": "bookings.Booking",
    "APARTMENT_MODEL": "bookings.Apartment",
    "BOOKING_PHONE_FIELD": "tenant__phone",  # ORM path from a booking to the phone
    "BOOKING_APARTMENT_FIELD": "apartment",  # the booking's foreign key to the apartment
    "BOOKING_START_FIELD": "start_date",  # optional, with BOOKING_END_FIELD:
    "BOOKING_END_FIELD": "end_date",  # prefer the stay that includes today
}

if DEBUG and not TWILIO_CONVLINK["AUTH_TOKEN"]:
    # A laptop without an account: sign with a placeholder (the sample command signs
    # with the same value), log the Twilio calls instead of making them, download no
    # files. Never in production: with DEBUG off a missing token stops every command
    # (E007).
    TWILIO_CONVLINK["AUTH_TOKEN"] = "local-placeholder-token"
    TWILIO_CONVLINK["API_BACKEND"] = "django_twilio_convlink.api.ConsoleBackend"
    TWILIO_CONVLINK["MEDIA_DOWNLOAD"] = False
