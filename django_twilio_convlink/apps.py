import logging

from django.apps import AppConfig
from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

logger = logging.getLogger(__name__)


class TwilioConvlinkConfig(AppConfig):
    name = "django_twilio_convlink"
    label = "twilio_convlink"
    verbose_name = _("Twilio webhook log")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks, group_chat, media, receivers  # noqa: F401  (checks: registers them)
        from .optouts import opt_out_by_keyword
        from .persistence import register_insert_step

        # Before the group chat's step: a STOP is on record when its forward is decided.
        register_insert_step(opt_out_by_keyword)
        group_chat.connect()
        media.connect()

        try:
            receivers.connect()
        except (ImproperlyConfigured, FieldDoesNotExist, LookupError) as exc:
            # The system checks report the setting precisely; starting up must not
            # crash first with a less helpful traceback.
            logger.debug("Retroactive linking not connected: %s", exc)
