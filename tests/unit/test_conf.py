"""The settings accessor and the model getters."""

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from django_twilio_convlink import get_conversation_model, get_message_model
from django_twilio_convlink.conf import convlink_settings
from django_twilio_convlink.phones import is_system_author
from tests.testapp.models import ChatConversation, ChatMessage


def test_model_getters_work_like_get_user_model():
    assert get_conversation_model() is ChatConversation
    assert get_message_model() is ChatMessage


def test_missing_required_setting_names_the_key(settings):
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "CONVERSATION_MODEL": None}
    with pytest.raises(ImproperlyConfigured, match=r'TWILIO_CONVLINK\["CONVERSATION_MODEL"\]'):
        get_conversation_model()


@pytest.mark.parametrize(("label", "message"), [("nolabel", "app_label.ModelName"),
                                                ("testapp.Nope", "not installed")])
def test_bad_model_labels(settings, label, message):
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "MESSAGE_MODEL": label}
    with pytest.raises(ImproperlyConfigured, match=message):
        get_message_model()


def test_defaults_apply():
    with override_settings(TWILIO_CONVLINK={}):
        assert convlink_settings.BOOKING_WINDOW_DAYS == 90
        assert convlink_settings.VALIDATE_SIGNATURE is True
        assert convlink_settings.ASSISTANT_IDENTITY == "ASSISTANT"


def test_unknown_setting_is_an_attribute_error():
    with pytest.raises(AttributeError):
        convlink_settings.NO_SUCH_THING  # noqa: B018


def test_override_settings_changes_system_authors_at_once(settings):
    assert not is_system_author("+14155550142")
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "SYSTEM_IDENTITIES": ["(415) 555-0142"]}
    assert is_system_author("+14155550142")
