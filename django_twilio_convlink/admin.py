"""ModelAdmin classes a site registers for its concrete models, one line each:

    admin.site.register(TwilioConversation, ConversationAdmin)
    admin.site.register(TwilioMessage, MessageAdmin)

Nothing is registered here: the app cannot know the site's concrete models, and
registering for them would take that choice away from the site.

The lists are meant to be read at 1280 pixels with the admin's navigation and filter
sidebars open, which leaves about 630 pixels for the table: few columns, SIDs shortened
to their ends (the full SID in the title, shown on hover), and the CSS in
``django_twilio_convlink/admin/change_list.html``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from . import get_message_model
from .deliveries import replay
from .linking import link_manually, manual_link_saved, update_conversation_links
from .models import LinkMethod, WebhookDelivery, incomplete
from .phones import normalize_phone
from .templatetags.convlink_admin import attachments

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise

    # The mixin goes before admin.ModelAdmin in a ModelAdmin's bases; for the type
    # checker, that is its base (its super() calls are ModelAdmin's).
    _PhoneSearchBase = admin.ModelAdmin
else:
    _PhoneSearchBase = object

CHANGE_LIST_TEMPLATE = "django_twilio_convlink/admin/change_list.html"


def short_sid(sid: str) -> SafeString | str:
    """A SID shortened to its ends for a list column ("CH2aa9…7a5c"); the full SID is
    the title, so hovering shows it and a page search for it still finds the row."""
    if not sid:
        return ""
    return format_html('<span class="convlink-sid" title="{}">{}…{}</span>', sid, sid[:6], sid[-4:])


def secondary(text: Any) -> SafeString:
    """A second, quieter line inside a list cell."""
    return format_html('<span class="convlink-secondary">{}</span>', text)


def truncated(text: str, length: int) -> SafeString | str:
    """``text`` cut to ``length`` characters, the whole of it in the title."""
    if len(text) <= length:
        return text
    return format_html('<span title="{}">{}…</span>', text, text[:length - 1].rstrip())


class PhoneSearchMixin(_PhoneSearchBase):
    """Search terms typed as a phone number also match the E.164 form the app stores.

    The admin's own search splits "(415) 555-0111" into words and finds nothing in a
    column holding "+14155550111". A term that parses as a phone (in PHONE_REGION) is
    therefore also looked up in ``phone_search_lookups``, OR-ed into the normal search:
    one statement, and no join beyond the normal search's, so whether rows may repeat
    is still the normal search's answer.
    """

    phone_search_lookups: tuple[str, ...] = ()

    def get_search_results(self, request: HttpRequest, queryset: QuerySet,
                           search_term: str) -> tuple[QuerySet, bool]:
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        phone = normalize_phone(search_term) if self.phone_search_lookups else None
        if phone:
            matches_phone = Q.create([(lookup, phone) for lookup in self.phone_search_lookups],
                                     connector=Q.OR)
            results |= queryset.filter(matches_phone)
        return results, may_have_duplicates


class LinkedFilter(admin.SimpleListFilter):
    title = _("linked to a booking")
    parameter_name = "linked"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, StrOrPromise]]:
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

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, StrOrPromise]]:
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


# The link methods' labels explain themselves at length; a list column needs one word.
LINK_METHOD_SHORT = {LinkMethod.AUTOMATIC: _("automatic"), LinkMethod.RETROACTIVE: _("retroactive"),
                     LinkMethod.MANUAL: _("manual")}


class ConversationAdmin(PhoneSearchMixin, admin.ModelAdmin):
    list_display = ("conversation_label", "booking", "apartment", "link", "created_at")
    list_filter = (LinkedFilter, "link_method", "is_group_chat", "state")
    search_fields = ("conversation_sid", "customer_phone", "friendly_name")
    phone_search_lookups = ("customer_phone",)
    change_list_template = CHANGE_LIST_TEMPLATE
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

    @admin.display(description=_("conversation"), ordering="customer_phone")
    def conversation_label(self, obj: Any) -> SafeString | str:
        # str() names the customer (a real friendly name, else the phone); the SID
        # only when there is nothing else, and then once.
        label = str(obj)
        if label == obj.conversation_sid:
            return short_sid(obj.conversation_sid)
        kind = _("group chat") if obj.is_group_chat else ""
        return format_html("{}{}", label, secondary(format_html_join(
            " · ", "{}", ((part,) for part in (kind, short_sid(obj.conversation_sid)) if part))))

    @admin.display(description=_("link"), ordering="link_method")
    def link(self, obj: Any) -> SafeString | str:
        if not obj.link_method:
            return self.get_empty_value_display()
        return format_html('<span title="{}">{}</span>', obj.get_link_method_display(),
                           LINK_METHOD_SHORT.get(obj.link_method, obj.link_method))

    def get_inline_instances(self, request: HttpRequest, obj: Any = None) -> list:
        if obj is None:
            return []
        inline_class = type("MessageInline", (MessageInline,), {"model": get_message_model()})
        return [inline_class(self.model, self.admin_site)]

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        # A person choosing (or clearing) the booking is a manual link, which
        # automation never overwrites.
        manual = bool({"booking", "apartment"} & set(form.changed_data))
        if manual:
            link_manually(obj)
        super().save_model(request, obj, form, change)
        # Announced when the booking changes: another apartment for the same booking
        # is still a manual link, but no news for conversation_linked's receivers.
        if "booking" in form.changed_data:
            manual_link_saved(obj)

    # Relinking writes the booking and apartment of the conversations: a user who may
    # only view them must neither see nor run it.
    @admin.action(description=_("Relink selected conversations by customer phone"), permissions=["change"])
    def relink_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        # As the command does: bookings imported without post_save are missing from the
        # phone index, and the lookup would not find them (one statement when none is).
        report = update_conversation_links(conversations=queryset, index_missing=True)
        linked, examined = report.linked, report.examined
        skipped = queryset.count() - examined
        message = ngettext(
            "%(linked)d of %(examined)d unlinked conversation linked; %(skipped)d skipped "
            "(already linked, manual, or no customer phone).",
            "%(linked)d of %(examined)d unlinked conversations linked; %(skipped)d skipped "
            "(already linked, manual, or no customer phone).",
            examined,
        ) % {"linked": linked, "examined": examined, "skipped": skipped}
        indexed = report.index.indexed if report.index else 0
        if indexed:
            message += " " + ngettext(
                "%(indexed)d booking missing from the phone index was indexed first.",
                "%(indexed)d bookings missing from the phone index were indexed first.",
                indexed,
            ) % {"indexed": indexed}
        self.message_user(request, message, messages.SUCCESS)


class MessageAdmin(PhoneSearchMixin, admin.ModelAdmin):
    list_display = ("short_body", "conversation", "sender", "sent")
    list_filter = ("direction", "source", "forward_state")
    search_fields = ("message_sid", "author", "body", "conversation__conversation_sid")
    # Twilio prefixes the channel to some authors ("whatsapp:+14155550111").
    phone_search_lookups = ("author__endswith",)
    change_list_template = CHANGE_LIST_TEMPLATE
    list_select_related = ("conversation",)
    raw_id_fields = ("conversation",)
    readonly_fields = ("message_sid", "forward_state", "forwarded_sid", "forward_attempts",
                       "forward_retry_at", "created_at", "updated_at")
    date_hierarchy = "created_at"

    @admin.display(description=_("message"))
    def short_body(self, obj: Any) -> SafeString:
        # Never empty: the first column is the link to the message.
        text: StrOrPromise
        if obj.body:
            text = truncated(obj.body, 100)
        elif count := len(attachments(obj.media)):
            text = ngettext("(%(count)d attachment)", "(%(count)d attachments)", count) % {"count": count}
        else:
            text = _("(no text)")
        return format_html("{}{}", text, secondary(short_sid(obj.message_sid)))

    @admin.display(description=_("author"), ordering="author")
    def sender(self, obj: Any) -> SafeString:
        # The direction and the forward into the group chat beneath: two columns fewer.
        details = [obj.get_direction_display()]
        if obj.forward_state:
            details.append(_("forward: %(state)s") % {"state": obj.get_forward_state_display()})
        return format_html("{}{}", obj.author or self.get_empty_value_display(),
                           secondary(" · ".join(str(detail) for detail in details)))

    @admin.display(description=_("sent"), ordering="date_created")
    def sent(self, obj: Any) -> Any:
        return obj.date_created or obj.created_at


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    """The app's own delivery log: registered here, since the app owns the model."""

    list_display = ("received_at", "event", "state", "sids", "short_error")
    list_filter = (NeedsReplayFilter, "status", "event_type")
    search_fields = ("message_sid", "conversation_sid", "idempotency_token", "account_sid")
    date_hierarchy = "received_at"
    change_list_template = CHANGE_LIST_TEMPLATE
    actions = ["replay_selected"]
    readonly_fields = [f.name for f in WebhookDelivery._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description=_("event"), ordering="event_type")
    def event(self, obj: WebhookDelivery) -> StrOrPromise:
        if not obj.event_type:
            return _("Unreadable delivery")
        # Break "onConversationStateUpdated" between its words, not anywhere.
        words = re.split(r"(?<=[a-z])(?=[A-Z])", obj.event_type)
        return format_html_join(mark_safe("<wbr>"), "{}", ((word,) for word in words))

    @admin.display(description=_("SIDs"))
    def sids(self, obj: WebhookDelivery) -> SafeString | str:
        if not (obj.message_sid or obj.conversation_sid):
            return self.get_empty_value_display()
        return format_html_join(mark_safe("<br>"), "{}", (
            (short_sid(sid),) for sid in (obj.message_sid, obj.conversation_sid) if sid))

    @admin.display(description=_("status"), ordering="status")
    def state(self, obj: WebhookDelivery) -> SafeString:
        # Our processing attempts and Twilio's retries of the delivery (its RetryCount)
        # beneath the status: two columns fewer.
        attempts = obj.attempts
        details = [ngettext("%(count)d attempt", "%(count)d attempts", attempts) % {"count": attempts}]
        if obj.retry_count:
            details.append(_("Twilio retry %(count)d") % {"count": obj.retry_count})
        return format_html("{}{}", obj.get_status_display(), secondary(" · ".join(details)))

    @admin.display(description=_("error"))
    def short_error(self, obj: WebhookDelivery) -> SafeString | str:
        return truncated(obj.error, 60)

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
