from django.db import models


class Ping(models.Model):
    """The baseline view's one-column table (plus the primary key every table has)."""

    message_sid = models.CharField(max_length=34)

    def __str__(self) -> str:
        return self.message_sid
