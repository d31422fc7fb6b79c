"""ModelAdmin classes a site registers for its concrete models, one line each:

    admin.site.register(TwilioConversation, ConversationAdmin)
    admin.site.register(TwilioMessage, MessageAdmin)

Nothing is registered here: the app cannot know the site's concrete models, and
registering for them would take that choice away from the site.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from . import get_message_model
from .deliveries import replay
from .linking import link_manually, update_conversation_links
from .models import WebhookDelivery, incomplete


class LinkedFilter(admin.SimpleListFilter):
    title = _("linked to a booking")
    parameter_name = "linked"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", _("Linked")), ("no", _("Unlinked"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "yes":
            return queryset.filter(booking__isnull=False)
        if self.value() == "no":
            return queryset.filter(booking__isnull=True)
        return queryset


class NeedsReplayFilter(admin.SimpleListFilter):
    title = _("needs a replay")
    parameter_name = "needs_replay"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("unfinished", _("Unfinished (worker died)")), ("failed", _("Failed")),
                ("any", _("Failed or unfinished"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() in ("unfinished", "failed", "any"):
            return queryset.filter(incomplete(failed=self.value() != "unfinished",
                                              unfinished=self.value() != "failed"))
        return queryset


class MessageInline(admin.TabularInline):
    # ``model`` is set per site in ConversationAdmin.get_inline_instances: the concrete
    # message model is only known from settings at run time.
    template = "django_twilio_convlink/admin/message_thread.html"
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = True
    fields = ("date_created", "direction", "author", "body", "source", "date_removed")
    readonly_fields = fields
    ordering = ("index", "pk")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ConversationAdmin(admin.ModelAdmin):
    list_display = ("conversation_sid", "friendly_name", "customer_phone", "booking",
                    "apartment", "link_method", "linked_at", "created_at")
    list_filter = (LinkedFilter, "link_method", "is_group_chat", "state")
    search_fields = ("conversation_sid", "customer_phone", "friendly_name")
    list_select_related = ("booking", "apartment")
    raw_id_fields = ("booking", "apartment")
    readonly_fields = ("conversation_sid", "link_method", "linked_at", "booking_lookup_at",
                       "date_created", "created_at", "updated_at", "is_group_chat", "group_chat",
                       "group_chat_error", "group_chat_error_code", "group_chat_attempts",
                       "group_chat_retry_at")
    date_hierarchy = "created_at"
    actions = ["relink_selected"]
    fieldsets = (
        (None, {"fields": ("conversation_sid", "friendly_name", "unique_name", "state",
                           "customer_phone")}),
        (_("Link"), {"fields": ("booking", "apartment", "link_method", "linked_at",
                                "booking_lookup_at")}),
        (_("Group chat"), {"fields": ("is_group_chat", "group_chat", "group_chat_error",
                                      "group_chat_error_code", "group_chat_attempts",
                                      "group_chat_retry_at")}),
        (_("Twilio"), {"classes": ("collapse",),
                       "fields": ("chat_service_sid", "messaging_service_sid", "attributes",
                                  "date_created", "created_at", "updated_at")}),
    )

    def get_inline_instances(self, request: HttpRequest, obj: Any = None) -> list:
        if obj is None:
            return []
        inline_class = type("MessageInline", (MessageInline,), {"model": get_message_model()})
        return [inline_class(self.model, self.admin_site)]

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        # A person choosing (or clearing) the booking is a manual link, which
        # automation never overwrites.
        if {"booking", "apartment"} & set(form.changed_data):
            link_manually(obj)
        super().save_model(request, obj, form, change)

    # Relinking writes the booking and apartment of the conversations: a user who may
    # only view them must neither see nor run it.
    @admin.action(description=_("Relink selected conversations by customer phone"), permissions=["change"])
    def relink_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        report = update_conversation_links(conversations=queryset)
        linked, examined = report.linked, report.examined
        skipped = queryset.count() - examined
        self.message_user(request, ngettext(
            "%(linked)d of %(examined)d unlinked conversation linked; %(skipped)d skipped "
            "(already linked, manual, or no customer phone).",
            "%(linked)d of %(examined)d unlinked conversations linked; %(skipped)d skipped "
            "(already linked, manual, or no customer phone).",
            examined,
        ) % {"linked": linked, "examined": examined, "skipped": skipped}, messages.SUCCESS)


class MessageAdmin(admin.ModelAdmin):
    list_display = ("message_sid", "conversation", "direction", "author", "short_body",
                    "source", "forward_state", "date_created")
    list_filter = ("direction", "source", "forward_state")
    search_fields = ("message_sid", "author", "body", "conversation__conversation_sid")
    list_select_related = ("conversation",)
    raw_id_fields = ("conversation",)
    readonly_fields = ("message_sid", "forward_state", "forwarded_sid", "forward_attempts",
                       "forward_retry_at", "created_at", "updated_at")
    date_hierarchy = "created_at"

    @admin.display(description=_("body"))
    def short_body(self, obj: Any) -> str:
        return obj.body if len(obj.body) <= 60 else obj.body[:57] + "..."


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    """The app's own delivery log: registered here, since the app owns the model."""

    list_display = ("received_at", "event_type", "status", "message_sid", "conversation_sid",
                    "retry_count", "attempts", "processed_at", "short_error")
    list_filter = (NeedsReplayFilter, "status", "event_type")
    search_fields = ("message_sid", "conversation_sid", "idempotency_token", "account_sid")
    date_hierarchy = "received_at"
    actions = ["replay_selected"]
    readonly_fields = [f.name for f in WebhookDelivery._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description=_("error"))
    def short_error(self, obj: WebhookDelivery) -> str:
        return obj.error if len(obj.error) <= 80 else obj.error[:77] + "..."

    def has_replay_permission(self, request: HttpRequest) -> bool:
        # The log itself is read-only in the admin; replaying writes conversations and
        # messages, so it takes the model's change permission.
        return request.user.has_perm("twilio_convlink.change_webhookdelivery")

    @admin.action(description=_("Replay selected deliveries"), permissions=["replay"])
    def replay_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        report = replay(queryset.order_by("received_at", "pk"))
        level = messages.ERROR if report.failed or report.rejected else messages.SUCCESS
        self.message_user(request, _(
            "%(processed)d replayed, %(failed)d failed again, %(rejected)d malformed."
        ) % {"processed": len(report.processed), "failed": len(report.failed),
             "rejected": len(report.rejected)}, level)
        for pk, error in report.failed:
            self.message_user(request, f"Delivery {pk}: {error}", messages.ERROR)


__all__ = ["ConversationAdmin", "LinkedFilter", "MessageAdmin", "MessageInline",
           "NeedsReplayFilter", "WebhookDeliveryAdmin"]
