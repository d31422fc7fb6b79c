from django.db import models


class Ping(models.Model):
    """The baseline view's one-column table (plus the primary key every table has)."""

    message_sid = models.CharField(max_length=34)

    def __str__(self) -> str:
        return self.message_sid


class PlainConversation(models.Model):
    """The hand-written view's conversation: what a site would write from the seed."""

    conversation_sid = models.CharField(max_length=34, unique=True)
    customer_phone = models.CharField(max_length=40, blank=True)
    booking = models.ForeignKey("testapp.Reservation", null=True, blank=True, on_delete=models.SET_NULL)

    def __str__(self) -> str:
        return self.conversation_sid


class PlainMessage(models.Model):
    """The hand-written view's message."""

    message_sid = models.CharField(max_length=34, unique=True)
    conversation = models.ForeignKey(PlainConversation, on_delete=models.CASCADE)
    author = models.CharField(max_length=255)
    body = models.TextField(blank=True)
    direction = models.CharField(max_length=10)

    def __str__(self) -> str:
        return self.message_sid
