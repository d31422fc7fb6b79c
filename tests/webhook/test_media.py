"""Customers' files brought into the site's storage (``media``): driven through the
webhook, signed with the SDK's RequestValidator, against the stand-in media service
on loopback (tests/media_server.py)."""

import pytest

from django_twilio_convlink.models import StoredMedia
from tests.helpers import TwilioClient, payload
from tests.testapp.models import ChatConversation

pytestmark = pytest.mark.django_db(transaction=True)

MEDIA_SID = "ME66666666666666666666666666666666"
SERVICE_SID = "IS88888888888888888888888888888888"
JPEG = b"\xff\xd8\xff\xe0" + b"heater" * 1000


def test_photo_is_stored_with_its_bytes(twilio_client: TwilioClient, media_service, received):
    media_service.add(MEDIA_SID, JPEG, content_type="image/jpeg", filename="heater.jpg")
    data = payload("onMessageAdded_mms_with_media", ChatServiceSid=SERVICE_SID,
                   Media=f'[{{"Sid":"{MEDIA_SID}","ContentType":"image/jpeg","Filename":"heater.jpg",'
                         f'"Size":{len(JPEG)}}}]')
    assert twilio_client.webhook(data).status_code == 200
    stored = StoredMedia.objects.get(media_sid=MEDIA_SID)
    assert stored.state == "stored", stored.last_error
    with stored.file.open("rb") as f:
        assert f.read() == JPEG
    assert "heater" not in stored.file.name and stored.file.name.endswith(".jpg")
    assert ChatConversation.objects.get(conversation_sid=data["ConversationSid"]).chat_service_sid == SERVICE_SID
    assert all("Authorization" not in seen.headers for seen in media_service.requests_to("cdn"))
    assert [seen.headers.get("Authorization", "")[:6] for seen in media_service.requests_to("mcs")] == ["Basic "]
    assert "media_stored" in received.names()
