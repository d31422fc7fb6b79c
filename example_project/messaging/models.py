"""The concrete conversation and message models, named in TWILIO_CONVLINK.

As with a custom user model, the fields come from the app's abstract classes and the
tables from this app's migrations, whose foreign keys point at bookings.Booking and
bookings.Apartment. Add fields or methods here if the site needs them.
"""

from django_twilio_convlink.models import AbstractTwilioConversation, AbstractTwilioMessage


class TwilioConversation(AbstractTwilioConversation):
    pass


class TwilioMessage(AbstractTwilioMessage):
    pass
