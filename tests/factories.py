import datetime

import factory
from django.utils import timezone

from tests.helpers import sid
from tests.testapp.models import ChatConversation, ChatMessage, Guest, Property, Reservation


class PropertyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Property

    title = factory.Sequence(lambda n: f"Unit {n}")


class GuestFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Guest

    full_name = factory.Faker("name")
    mobile = factory.Sequence(lambda n: f"(561) 555-{n % 10000:04d}")


class ReservationFactory(factory.django.DjangoModelFactory):
    """A stay around today unless told otherwise (``days_from_today`` shifts it)."""

    class Meta:
        model = Reservation

    class Params:
        days_from_today = 0
        nights = 5

    guest = factory.SubFactory(GuestFactory)
    unit = factory.SubFactory(PropertyFactory)
    check_in = factory.LazyAttribute(
        lambda o: timezone.localdate() + datetime.timedelta(days=o.days_from_today - 1))
    check_out = factory.LazyAttribute(lambda o: o.check_in + datetime.timedelta(days=o.nights))


class ConversationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ChatConversation

    conversation_sid = factory.LazyFunction(lambda: sid("CH"))
    friendly_name = factory.LazyAttribute(lambda o: f"Conversation {o.conversation_sid}")


class MessageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ChatMessage

    message_sid = factory.LazyFunction(lambda: sid("IM"))
    conversation = factory.SubFactory(ConversationFactory)
    author = "+14155550142"
    body = "Hello"
    direction = "inbound"
