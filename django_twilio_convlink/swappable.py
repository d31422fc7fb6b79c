"""The site's models the app works with, named in settings: ``get_conversation_model()``
and ``get_message_model()`` are to this app what ``get_user_model()`` is to Django's
auth. Re-exported by the package root, their documented import path; the app's own
modules import them from here, so that nothing below the package root imports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from django.db.models import Model

    from .models import AbstractTwilioConversation, AbstractTwilioMessage


def _get_model(setting: str) -> type[Model]:
    from django.apps import apps
    from django.core.exceptions import ImproperlyConfigured

    from .conf import convlink_settings

    label = getattr(convlink_settings, setting)
    try:
        return apps.get_model(label, require_ready=False)
    except ValueError:
        raise ImproperlyConfigured(
            f'TWILIO_CONVLINK["{setting}"] must be of the form "app_label.ModelName", not {label!r}.'
        ) from None
    except LookupError:
        raise ImproperlyConfigured(
            f'TWILIO_CONVLINK["{setting}"] refers to model {label!r}, which is not installed.'
        ) from None


def get_conversation_model() -> type[AbstractTwilioConversation]:
    """The site's concrete conversation model, as ``get_user_model()`` is for users."""
    # A subclass of the abstract model: the system check twilio_convlink.E003 says so.
    return cast("type[AbstractTwilioConversation]", _get_model("CONVERSATION_MODEL"))


def get_message_model() -> type[AbstractTwilioMessage]:
    """The site's concrete message model."""
    return cast("type[AbstractTwilioMessage]", _get_model("MESSAGE_MODEL"))  # E003 as well


def get_booking_model() -> type[Model]:
    """The site's booking model, named by ``TWILIO_CONVLINK["BOOKING_MODEL"]``."""
    return _get_model("BOOKING_MODEL")
