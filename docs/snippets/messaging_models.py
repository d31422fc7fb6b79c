# messaging/models.py
from django_twilio_convlink.models import AbstractTwilioConversation, AbstractTwilioMessage


class TwilioConversation(AbstractTwilioConversation):
    pass


class TwilioMessage(AbstractTwilioMessage):
    pass
