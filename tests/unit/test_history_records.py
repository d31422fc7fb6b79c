"""The history sync's reading of Twilio's resources: what a message's delivery summary
means, and where a message came from when the resource does not say."""

import pytest

from django_twilio_convlink.history.records import delivery_summary, source_of
from django_twilio_convlink.history.sync import addresses_of


def summary(**counts: str) -> dict:
    return {"total": 2, "sent": "none", "delivered": "none", "read": "none", "failed": "none",
            "undelivered": "none", **counts}


@pytest.mark.parametrize(("counts", "status"), [
    # Twilio's own example: one recipient at sent, one delivered and read.
    ({"sent": "all", "delivered": "some", "read": "some"}, "sent"),
    ({"delivered": "all"}, "delivered"),
    ({"delivered": "some", "read": "some"}, "delivered"),
    ({"read": "all"}, "read"),
    ({"failed": "some", "read": "some"}, "failed"),
    ({"undelivered": "all"}, "undelivered"),
    ({"undelivered": "some", "failed": "some"}, "failed"),
    ({}, ""),
])
def test_a_delivery_summary_is_the_receipts_rules_status(counts, status):
    assert delivery_summary(summary(**counts), "ASSISTANT") == status


def test_a_customers_own_text_has_no_delivery_and_a_missing_summary_says_nothing():
    assert delivery_summary(summary(delivered="all"), "+14155550111") == ""
    assert delivery_summary(None, "ASSISTANT") == ""


@pytest.mark.parametrize(("author", "source"), [
    ("whatsapp:+14155550111", "WHATSAPP"), ("+14155550111", "SMS"), ("ASSISTANT", "API"), ("", "API")])
def test_the_source_follows_the_author(author, source):
    assert source_of(author) == source


def test_a_phone_is_looked_up_on_sms_and_whatsapp():
    assert addresses_of("(415) 555-0111") == ["+14155550111", "whatsapp:+14155550111"]
    assert addresses_of("whatsapp:+14155550111") == ["+14155550111", "whatsapp:+14155550111"]
    with pytest.raises(ValueError, match="not a phone number"):
        addresses_of("reception")
