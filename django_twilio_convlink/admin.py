"""ModelAdmin classes a site registers for its concrete models, one line each:

    admin.site.register(TwilioConversation, ConversationAdmin)
    admin.site.register(TwilioMessage, MessageAdmin)

The site's models are not registered here: the app cannot know them, and registering
for them would take that choice away from the site. The app's own models are (the
delivery log, the opt-outs).

What a property manager asks of these pages, they answer without a click: whether each
text we sent arrived (and if not, why, in words), and whether a customer may be texted
at all. Opting a customer out or back in by hand goes through ``optouts`` like any
other opt-out (its signal, its log line) and is also written to the admin's history.

The lists are meant to be read at 1280 pixels with the admin's navigation and filter
sidebars open, which leaves about 630 pixels for the table: few columns, SIDs shortened
to their ends (the full SID in the title, shown on hover), and the CSS in
``django_twilio_convlink/admin/change_list.html``.
"""

from __future__ import annotations

import datetime
import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import display_for_value, unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Exists, F, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.http.response import HttpResponseBase
from django.template.defaultfilters import filesizeformat
from django.urls import NoReverseMatch, path, reverse
from django.utils import formats, timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import SafeString, mark_safe
from django.utils.text import capfirst
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from . import get_conversation_model, get_message_model
from .choices import Direction, MediaState, OptOutMethod, ReceiptStatus
from .conf import convlink_settings
from .deliveries import replay
from .exceptions import ApiError, InvalidMessage
from .linking import link_manually, manual_link_saved, update_conversation_links
from .media.downloads import descriptors
from .media.serve import belongs_to, describe_state, file_response, files_of
from .models import OptOut, StoredMedia, WebhookDelivery, incomplete
from .optouts import OPTED_OUT_ERROR, opt_in, opt_out
from .phones import normalize_phone
from .receipts import FAILURES
from .sending import send_message
from .templatetags.convlink_admin import (
    attachments,
    delivery,
    delivery_label,
    delivery_of,
    delivery_reason,
    delivery_status,
    message_files,
)

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise

    # The mixins go before admin.ModelAdmin in a ModelAdmin's bases; for the type
    # checker, that is their base (their super() and self calls are ModelAdmin's).
    _ModelAdminMixinBase = admin.ModelAdmin
else:
    _ModelAdminMixinBase = object

logger = logging.getLogger(__name__)

CHANGE_LIST_TEMPLATE = "django_twilio_convlink/admin/change_list.html"
CHANGE_FORM_TEMPLATE = "django_twilio_convlink/admin/change_form.html"


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


class PhoneSearchMixin(_ModelAdminMixinBase):
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


class DeliveryFilter(admin.SimpleListFilter):
    title = _("delivery")
    parameter_name = "delivery"
    NOT_DELIVERED, NO_RECEIPT = "not_delivered", "none"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, StrOrPromise]]:
        return [(self.NOT_DELIVERED, _("Not delivered (failed or undelivered)")),
                *ReceiptStatus.choices, (self.NO_RECEIPT, _("Our texts without a receipt yet"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value == self.NOT_DELIVERED:
            return queryset.filter(delivery_status__in=FAILURES)
        if value == self.NO_RECEIPT:
            # Ours only: a customer's text in their own conversation never gets one.
            return queryset.filter(delivery_status="", direction=Direction.OUTBOUND)
        if value in ReceiptStatus.values:
            return queryset.filter(delivery_status=value)
        return queryset


def customer_opted_out() -> Exists:
    """Whether a conversation's customer phone is opted out now: a subquery of the
    list's own statement, not a query per row."""
    return Exists(OptOut.objects.filter(phone=OuterRef("customer_phone"), opted_in_at=None))


class OptedOutFilter(admin.SimpleListFilter):
    title = _("texts")
    parameter_name = "opted_out"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, StrOrPromise]]:
        return [("yes", _("Customer opted out")), ("no", _("Customer not opted out"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "yes":
            return queryset.filter(customer_opted_out())
        if self.value() == "no":
            return queryset.filter(~customer_opted_out())
        return queryset


class OptOutMethodFilter(admin.SimpleListFilter):
    # The field's own filter would be titled "By opted out by".
    title = _("how they opted out")
    parameter_name = "method"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, StrOrPromise]]:
        return list(OptOutMethod.choices)

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() in OptOutMethod.values:
            return queryset.filter(method=self.value())
        return queryset


class OptOutStateFilter(admin.SimpleListFilter):
    title = _("state")
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, StrOrPromise]]:
        return [("out", _("Opted out")), ("in", _("Opted back in"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() in ("out", "in"):
            return queryset.filter(opted_in_at__isnull=self.value() == "out")
        return queryset


def admin_url(admin_site: admin.AdminSite, model: Any, view: str, *args: Any, **query: str) -> str:
    """The URL of ``model``'s ``view`` page in ``admin_site``, "" when the site does not
    register the model there."""
    opts = model._meta
    try:
        url = reverse(f"{admin_site.name}:{opts.app_label}_{opts.model_name}_{view}", args=args,
                      current_app=admin_site.name)
    except NoReverseMatch:
        return ""
    return f"{url}?{urlencode(query)}" if query else url


def may_view_conversations(request: HttpRequest) -> bool:
    """Whether the user may view the conversation model's pages (its view or change
    permission): the rule for seeing a customer's files, as the conversation admin's
    file view applies it."""
    opts = get_conversation_model()._meta
    return any(request.user.has_perm(f"{opts.app_label}.{action}_{opts.model_name}")
               for action in ("view", "change"))


def _when(moment: datetime.datetime) -> str:
    return formats.date_format(timezone.localtime(moment), "DATETIME_FORMAT")


def how_opted_out(row: OptOut) -> StrOrPromise:
    """How ``row``'s phone opted out, in a manager's words ("texted STOP")."""
    if row.method == OptOutMethod.KEYWORD:
        return (_("texted %(keyword)s") % {"keyword": row.detail} if row.detail
                else _("texted an opt-out word"))
    if row.method == OptOutMethod.ERROR:
        return _("Twilio refused a text to them, error %(code)s") % {"code": row.detail or OPTED_OUT_ERROR}
    return _("by hand: %(note)s") % {"note": row.detail} if row.detail else _("by hand")


def how_opted_in(row: OptOut) -> StrOrPromise:
    if row.opted_in_method == OptOutMethod.KEYWORD:
        return (_("texted %(keyword)s") % {"keyword": row.opted_in_detail} if row.opted_in_detail
                else _("texted an opt-in word"))
    return _("by hand: %(note)s") % {"note": row.opted_in_detail} if row.opted_in_detail else _("by hand")


def opt_out_state(row: OptOut | None) -> StrOrPromise:
    """A phone's opt-out state in one sentence."""
    if row is None:
        return _("Can be texted.")
    if row.is_opted_out:
        return _("Opted out of texts since %(when)s (%(how)s).") % {
            "when": _when(row.opted_out_at), "how": how_opted_out(row)}
    assert row.opted_in_at is not None
    return _("Opted back in on %(when)s (%(how)s); had opted out on %(before)s (%(how_before)s).") % {
        "when": _when(row.opted_in_at), "how": how_opted_in(row),
        "before": _when(row.opted_out_at), "how_before": how_opted_out(row)}


def opt_out_notice(row: OptOut | None) -> SafeString | str:
    """The banner above a conversation whose customer opted out (or did, and back in)."""
    if row is None:
        return ""
    if not row.is_opted_out:
        # Twilio lifts its own block only when the customer texts START: a person
        # opting them back in here does not make texts to a phone that texted STOP arrive.
        by_hand_after_stop = row.method != OptOutMethod.ADMIN and row.opted_in_method == OptOutMethod.ADMIN
        still_blocked = (_("They had texted STOP: Twilio itself refuses texts to them until they text START.")
                         if by_hand_after_stop else "")
        return format_html('<div class="convlink-notice"><strong>{}</strong> {} {}</div>',
                           _("Texts allowed again."), opt_out_state(row), still_blocked)
    until = (_("Until someone opts them back in (the action “Opt the customer back in to texts” "
               "in the conversation list),") if row.method == OptOutMethod.ADMIN
             else _("Until they text START,"))
    return format_html(
        '<div class="convlink-notice convlink-notice-opted-out" role="alert">'
        '<strong>{}</strong> {} {} {}</div>',
        _("This customer opted out of texts."),
        _("Since %(when)s (%(how)s).") % {"when": _when(row.opted_out_at), "how": how_opted_out(row)}, until,
        _("nothing is sent to %(phone)s and their texts are not copied into the group chat (they are "
          "still saved here).") % {"phone": row.phone})


class OptOutActionsMixin(_ModelAdminMixinBase):
    """The admin's two actions that change whether customers may be texted, for the
    conversation list and the opt-out list: through ``optouts`` (its signal and log
    line, as for any opt-out), written to the admin history of the opt-out and of
    each selected object, and logged with the user's name.

    They take the opt-out model's change permission, not the selected rows': they
    write opt-outs. ``opt_out_phones`` says which phone each selected object stands for.
    """

    def has_opt_out_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(f"{OptOut._meta.app_label}.change_{OptOut._meta.model_name}")

    def opt_out_phones(self, queryset: QuerySet) -> list[tuple[Any, str]]:
        """(object, phone) of each selected object; a blank phone when it has none."""
        raise NotImplementedError

    @admin.action(description=_("Opt the customer out of texts"), permissions=["opt_out"])
    def opt_out_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._change_opt_outs(request, queryset, opt_out, _("opted out of texts"),
                              _("Already opted out, nothing changed"))

    @admin.action(description=_("Opt the customer back in to texts"), permissions=["opt_out"])
    def opt_in_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._change_opt_outs(request, queryset, opt_in, _("opted back in to texts"),
                              _("Not opted out, nothing changed"))

    def _change_opt_outs(self, request: HttpRequest, queryset: QuerySet, change: Callable[..., bool],
                         done: StrOrPromise, already: StrOrPromise) -> None:
        selected = self.opt_out_phones(queryset)
        phones = {phone: normalize_phone(phone) for _obj, phone in selected if phone}
        wanted = list(dict.fromkeys(normalized for normalized in phones.values() if normalized))
        # An opt-in by a person does not lift Twilio's own block of a phone that texted
        # STOP (or was refused with 21610): the manager must hear it.
        blocked = set() if change is opt_out else set(
            OptOut.objects.filter(phone__in=wanted, opted_in_at=None).exclude(method=OptOutMethod.ADMIN)
            .values_list("phone", flat=True))
        changed = [phone for phone in wanted if change(phone, how=OptOutMethod.ADMIN, origin="admin")]
        user = request.user.get_username()
        for phone in changed:
            logger.info("%s %s in the admin by %s", phone, done, user)
            entry = _("%(phone)s %(done)s.") % {"phone": phone, "done": done}
            for obj, selected_phone in selected:
                if phones.get(selected_phone) == phone and not isinstance(obj, OptOut):
                    self.log_change(request, obj, entry)
        for row in OptOut.objects.filter(phone__in=changed):
            self.log_change(request, row, _("%(phone)s %(done)s.") % {"phone": row.phone, "done": done})
        self._report_opt_outs(request, selected, phones, changed, blocked, done, already)

    def _report_opt_outs(self, request: HttpRequest, selected: list[tuple[Any, str]],
                         phones: dict[str, str | None], changed: list[str], blocked: set[str],
                         done: StrOrPromise, already: StrOrPromise) -> None:
        unchanged = [phone for phone in dict.fromkeys(phones.values()) if phone and phone not in changed]
        if changed:
            self.message_user(request, ngettext(
                "%(count)d customer %(done)s: %(phones)s.", "%(count)d customers %(done)s: %(phones)s.",
                len(changed)) % {"count": len(changed), "done": done, "phones": ", ".join(changed)},
                messages.SUCCESS)
        if unchanged:
            self.message_user(request, f"{already}: {', '.join(unchanged)}.", messages.WARNING)
        if stop := [phone for phone in changed if phone in blocked]:
            self.message_user(request, _(
                "%(phones)s had texted STOP: Twilio itself keeps refusing texts to them until they "
                "text START.") % {"phones": ", ".join(stop)}, messages.WARNING)
        no_phone = sum(1 for _obj, phone in selected if not phone)
        if no_phone:
            self.message_user(request, ngettext(
                "Skipped %(count)d conversation without a customer phone.",
                "Skipped %(count)d conversations without a customer phone.", no_phone) % {"count": no_phone},
                messages.WARNING)
        if invalid := [phone for phone, normalized in phones.items() if normalized is None]:
            self.message_user(request, _("Skipped, not a phone number: %(values)s.") % {
                "values": ", ".join(invalid)}, messages.WARNING)


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


def thread_messages(conversation: Any = None) -> QuerySet:
    """The messages of one customer's thread, newest first: those of the conversation
    and of its group chat, but the group chat's copies of the customer's own texts
    (the same words again). ``conversation`` None: correlated to the outer
    conversation of a list query (``OuterRef``)."""
    pk = OuterRef("pk") if conversation is None else conversation.pk
    group = OuterRef("group_chat_id") if conversation is None else conversation.group_chat_id
    mine = Q(conversation_id=pk) | (Q(conversation_id=group) & ~Q(attributes__has_key="forwarded_from"))
    return (get_message_model()._default_manager.filter(mine)
            .order_by(Coalesce("date_created", "created_at").desc(), "-pk"))


def with_last_message(queryset: QuerySet) -> QuerySet:
    """Conversations with their thread's last message (when, what, who, its delivery)
    and whether the customer waits for an answer: computed in the list's own query,
    one correlated subquery each, so a page costs the same whatever the numbers of
    conversations and messages, and nothing has to be kept up to date on write."""
    last = thread_messages()
    return queryset.annotate(
        last_at=Subquery(last.values(when=Coalesce("date_created", "created_at"))[:1]),
        last_body=Subquery(last.values("body")[:1]),
        last_direction=Subquery(last.values("direction")[:1]),
        last_delivery=Subquery(last.values("delivery_status")[:1]),
        last_media=Subquery(last.values("media")[:1]),
    )


class ThreadKindFilter(admin.SimpleListFilter):
    """Customers' conversations by default: a group chat is part of its customer's
    thread, not a row of its own (shown with "Group chats" or "All")."""

    title = _("conversations")
    parameter_name = "kind"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, StrOrPromise]]:
        return [("customers", _("Customers")), ("group", _("Group chats")), ("all", _("All"))]

    def value(self) -> str:
        return super().value() or "customers"

    def choices(self, changelist: Any) -> Any:
        for lookup, title in self.lookup_choices:
            yield {"selected": self.value() == lookup, "display": title,
                   "query_string": changelist.get_query_string({self.parameter_name: lookup})}

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "group":
            return queryset.filter(is_group_chat=True)
        if self.value() == "all":
            return queryset
        return queryset.filter(is_group_chat=False)


class WaitingFilter(admin.SimpleListFilter):
    title = _("waiting for a reply")
    parameter_name = "waiting"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, StrOrPromise]]:
        return [("yes", _("Customer wrote last")), ("no", _("We answered last"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "yes":
            # A customer who opted out (their last text often the STOP itself) cannot
            # be answered: they wait for nothing.
            return queryset.filter(last_direction=Direction.INBOUND, customer_opted_out=False)
        if self.value() == "no":
            return queryset.filter(last_direction=Direction.OUTBOUND)
        return queryset



class ConversationAdmin(OptOutActionsMixin, PhoneSearchMixin, admin.ModelAdmin):
    list_display = ("conversation_label", "last_message", "apartment")
    list_filter = (ThreadKindFilter, WaitingFilter, LinkedFilter, OptedOutFilter, "link_method",
                   ("state", admin.AllValuesFieldListFilter))
    search_fields = ("conversation_sid", "customer_phone", "friendly_name", "messages__body")
    phone_search_lookups = ("customer_phone",)

    def get_search_fields(self, request: HttpRequest) -> Any:
        # A tenant's name or an apartment, through the booking fields the site names
        # (BOOKING_SEARCH_FIELDS, checked by twilio_convlink.E025).
        extra = convlink_settings.BOOKING_SEARCH_FIELDS
        extra = extra if isinstance(extra, list | tuple) else []
        booking = tuple(f"booking__{path}" for path in extra if isinstance(path, str) and path)
        return (*self.search_fields, *booking)
    change_list_template = CHANGE_LIST_TEMPLATE
    change_form_template = CHANGE_FORM_TEMPLATE
    list_select_related = ("booking", "apartment")
    raw_id_fields = ("booking", "apartment")
    # ... an autocomplete instead where the site's admin of the booking (apartment)
    # model can search: get_autocomplete_fields.
    # What a webhook owns is read-only: only the customer's phone and the manual link
    # (booking, apartment) are a person's to change.
    readonly_fields = ("texts", "conversation_sid", "friendly_name", "unique_name", "state",
                       "chat_service_sid", "messaging_service_sid", "attributes", "account_sid",
                       "date_updated", "link_method", "linked_at", "booking_lookup_at",
                       "date_created", "created_at", "updated_at", "is_group_chat", "group_chat",
                       "group_chat_error", "group_chat_error_code", "group_chat_attempts",
                       "group_chat_retry_at")
    date_hierarchy = "created_at"
    actions = ["relink_selected", "opt_out_selected", "opt_in_selected"]
    # The thread comes first (change_form.html), then who the customer is and their
    # booking; Twilio's internals last, folded.
    fieldsets = (
        (_("Customer and booking"), {"fields": ("customer_phone", "texts", "booking", "apartment",
                                                "link_method", "linked_at")}),
        (_("Group chat"), {"classes": ("collapse",),
                           "fields": ("is_group_chat", "group_chat", "group_chat_error",
                                      "group_chat_error_code", "group_chat_attempts",
                                      "group_chat_retry_at")}),
        (_("Twilio"), {"classes": ("collapse",),
                       "fields": ("conversation_sid", "friendly_name", "unique_name", "state",
                                  "chat_service_sid", "messaging_service_sid", "account_sid", "attributes",
                                  "booking_lookup_at", "date_created", "date_updated", "created_at",
                                  "updated_at")}),
    )

    @admin.display(description=_("customer"), ordering="customer_phone")
    def conversation_label(self, obj: Any) -> SafeString | str:
        # Who: the booking's own name for its customer (its __str__, the site's
        # choice), else what str() of the conversation gives (a real friendly name,
        # else the phone); the phone and the shortened SID below. The SID alone only
        # when there is nothing else, and then once.
        label = str(obj.booking) if obj.booking_id else str(obj)
        if label == obj.conversation_sid:
            return short_sid(obj.conversation_sid)
        kind = _("group chat") if obj.is_group_chat else ""
        phone = obj.customer_phone if obj.customer_phone and obj.customer_phone not in label else ""
        opted_out = format_html(' <span class="convlink-badge convlink-badge-opted-out" title="{}">{}</span>',
                                _("Opted out of texts: nothing is sent to this customer."), _("Opted out")
                                ) if getattr(obj, "customer_opted_out", False) else ""
        return format_html("{}{}{}", label, opted_out, secondary(format_html_join(
            " · ", "{}", ((part,) for part in (kind, phone, short_sid(obj.conversation_sid)) if part))))

    def get_autocomplete_fields(self, request: HttpRequest) -> Any:
        # Django's autocomplete asks the related model's admin to search (and refuses
        # without search_fields, admin.E040): where the site's booking or apartment
        # admin has none, or the model is not registered, the raw id box stays.
        searchable = []
        for name in ("booking", "apartment"):
            related = self.model._meta.get_field(name).related_model
            if self.admin_site.is_registered(related) and \
                    self.admin_site.get_model_admin(related).get_search_fields(request):
                searchable.append(name)
        return (*super().get_autocomplete_fields(request), *searchable)

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        # The list's columns and filters read these (the filters run before display).
        queryset = super().get_queryset(request).annotate(customer_opted_out=customer_opted_out())
        return with_last_message(queryset)

    def get_ordering(self, request: HttpRequest) -> list:
        # Newest activity first, in the list; conversations without a message last.
        return [F("last_at").desc(nulls_last=True), "-pk"]

    @admin.display(description=_("last message"), ordering="last_at")
    def last_message(self, obj: Any) -> SafeString | str:
        when = getattr(obj, "last_at", None)
        if when is None:
            return self.get_empty_value_display()
        ours = obj.last_direction == Direction.OUTBOUND
        text = obj.last_body or (_("(photo or file)") if obj.last_media else "")
        flag: SafeString | str = ""
        state: SafeString | str = ""
        if not ours and not getattr(obj, "customer_opted_out", False):
            flag = format_html('<span class="convlink-badge convlink-badge-waiting" title="{}">{}</span> ',
                               _("The customer wrote last: waiting for a reply."), _("Waiting"))
        elif obj.last_delivery in FAILURES:
            flag = format_html('<span class="convlink-badge convlink-badge-opted-out">{}</span> ',
                               _("Not delivered"))
        elif ours:
            # Sent, delivered, read or no receipt yet: quiet, beside the time.
            state = format_html(" · {}", delivery_label(delivery_of(obj.last_delivery or "")))
        who = _("We") if ours else _("Customer")
        return format_html("{}{} {}", flag, truncated(f"{who}: {text}", 70),
                           secondary(format_html("{}{}", _when(when), state)))

    def opt_out_of(self, obj: Any) -> OptOut | None:
        """The opt-out record of ``obj``'s customer, read once per page."""
        if "_convlink_opt_out" not in obj.__dict__:
            phone = normalize_phone(obj.customer_phone)
            obj.__dict__["_convlink_opt_out"] = OptOut.objects.filter(phone=phone).first() if phone else None
        return obj.__dict__["_convlink_opt_out"]

    @admin.display(description=_("texts"))
    def texts(self, obj: Any) -> StrOrPromise:
        if obj is None or not obj.customer_phone:
            return _("No customer phone known.")
        row = self.opt_out_of(obj)
        state = opt_out_state(row)
        if row is None:
            return state
        url = admin_url(self.admin_site, OptOut, "change", row.pk)
        return format_html('{} <a href="{}">{}</a>', state, url, _("Opt-out record")) if url else state

    def render_change_form(self, request: HttpRequest, context: dict[str, Any], add: bool = False,
                           change: bool = False, form_url: str = "", obj: Any = None) -> HttpResponse:
        if obj is not None and obj.customer_phone:
            context["convlink_notice"] = opt_out_notice(self.opt_out_of(obj))
        message_opts = get_message_model()._meta
        may_read = request.user.has_perm(f"{message_opts.app_label}.view_{message_opts.model_name}") or \
            request.user.has_perm(f"{message_opts.app_label}.change_{message_opts.model_name}")
        if obj is not None and may_read:
            context["convlink_reply"] = self.reply_box(request, obj)
            context["convlink_message_opts"] = message_opts
            # Oldest first, as a thread reads; the group chat's answers included. Its
            # files in one more query, whatever the number of messages.
            thread = list(thread_messages(obj).reverse())
            context["convlink_thread"] = thread
            context["convlink_who"] = self.who(obj)
            context["convlink_files"] = self.thread_files(obj, thread)
        return super().render_change_form(request, context, add=add, change=change, form_url=form_url,
                                          obj=obj)

    def who(self, obj: Any) -> list[tuple[StrOrPromise, Any, str]]:
        """The line above the thread: (what, value, its admin page or "") for the
        customer's phone, booking and apartment, those the conversation has."""
        parts: list[tuple[StrOrPromise, Any, str]] = []
        if obj.customer_phone:
            parts.append((_("Phone"), obj.customer_phone, ""))
        for name, what in (("booking", _("Booking")), ("apartment", _("Apartment"))):
            related = getattr(obj, name)
            if related is not None:
                parts.append((what, related, admin_url(self.admin_site, type(related), "change", related.pk)))
        return parts

    def get_urls(self) -> list:
        opts = self.model._meta
        return [path("<path:object_id>/file/<str:media_sid>/", self.admin_site.admin_view(self.file_view),
                     name=f"{opts.app_label}_{opts.model_name}_file"),
                path("<path:object_id>/reply/", self.admin_site.admin_view(self.reply_view),
                     name=f"{opts.app_label}_{opts.model_name}_reply"), *super().get_urls()]

    def has_send_permission(self, request: HttpRequest) -> bool:
        """The "Can send Twilio messages" permission of the conversation model."""
        return request.user.has_perm(f"{self.model._meta.app_label}.send_twilio_message")

    def reply_box(self, request: HttpRequest, obj: Any) -> dict[str, Any] | None:
        """What the thread's reply box needs: where it posts, and why it is disabled
        (an opted-out customer); None for a user who may not send."""
        if not self.has_send_permission(request):
            return None
        disabled = ""
        row = self.opt_out_of(obj) if obj.customer_phone else None
        if row is not None and row.is_opted_out:
            disabled = _("%(phone)s opted out of texts (%(how)s): nothing can be sent until they opt back "
                         "in.") % {"phone": obj.customer_phone, "how": how_opted_out(row)}
        return {"url": admin_url(self.admin_site, self.model, "reply", obj.pk), "disabled": disabled}

    def reply_view(self, request: HttpRequest, object_id: str) -> HttpResponseBase:
        """Send the reply box's text into this conversation (``send_message``), and
        come back to the thread with the outcome in the messages framework."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        conversation = self.get_object(request, unquote(object_id))
        if conversation is None:
            raise Http404(_("No such conversation."))
        may_see = self.has_view_or_change_permission(request, conversation)
        if not (self.has_send_permission(request) and may_see):
            raise PermissionDenied
        try:
            message = send_message(conversation, request.POST.get("body", ""))
        except (InvalidMessage, ApiError) as error:
            self.message_user(request, _("Not sent: %(reason)s") % {"reason": error}, messages.ERROR)
        else:
            logger.info("%s sent %s into conversation %s from the admin", request.user, message.message_sid,
                        conversation.conversation_sid)
            self.message_user(request, _("Sent: “%(text)s”") % {"text": truncated(message.body, 80)},
                              messages.SUCCESS)
        change = admin_url(self.admin_site, self.model, "change", conversation.pk)
        return HttpResponseRedirect(f"{change}#convlink-reply-box")

    def file_url(self, conversation: Any, media_sid: str) -> str:
        return admin_url(self.admin_site, self.model, "file", conversation.pk, media_sid)

    def thread_files(self, conversation: Any, thread: list[Any]) -> dict[str, tuple[StoredMedia, str]]:
        """The thread's files by media SID: each row, and the URL that serves it when
        stored. One query, however many messages. A file sent in the group chat (a
        photo from the manager's phone) is served through the group chat, the
        conversation it belongs to: through the customer's, the view would not find it."""
        sent_in: dict[str, Any] = {}
        for message in thread:
            for item in descriptors(message):
                sent_in.setdefault(item["Sid"], message.conversation_id)
        return {sid: (row, admin_url(self.admin_site, self.model, "file", sent_in.get(sid, conversation.pk),
                                     sid) if row.is_stored else "")
                for sid, row in files_of(thread).items()}

    def file_view(self, request: HttpRequest, object_id: str, media_sid: str) -> HttpResponseBase:
        """A file a customer sent in this conversation, to whoever may view the
        conversation: the only way the app serves stored media (``media.serve``)."""
        conversation = self.get_object(request, unquote(object_id))
        if conversation is None:
            raise Http404(_("No such conversation."))
        if not self.has_view_or_change_permission(request, conversation):
            raise PermissionDenied
        row = StoredMedia.objects.filter(media_sid=media_sid).first()
        if row is None or not row.is_stored or not belongs_to(row, conversation):
            raise Http404(_("No stored file of this conversation has that SID."))
        return file_response(row)

    def opt_out_phones(self, queryset: QuerySet) -> list[tuple[Any, str]]:
        return [(conversation, conversation.customer_phone) for conversation in queryset]

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
    list_filter = ("direction", DeliveryFilter, "source", "forward_state")
    search_fields = ("message_sid", "author", "body", "conversation__conversation_sid")
    # Twilio prefixes the channel to some authors ("whatsapp:+14155550111").
    phone_search_lookups = ("author__endswith",)
    change_list_template = CHANGE_LIST_TEMPLATE
    change_form_template = CHANGE_FORM_TEMPLATE
    list_select_related = ("conversation",)
    raw_id_fields = ("conversation",)
    # Twilio's receipts write the delivery fields; ``delivery`` shows the status in words.
    exclude = ("delivery_status",)
    readonly_fields = ("message_sid", "forward_state", "forward_skip_reason", "forwarded_sid",
                       "forward_attempts", "forward_retry_at", "delivery", "delivery_error_code",
                       "delivery_updated_at", "delivery_receipts", "created_at", "updated_at")
    date_hierarchy = "created_at"
    ordering = ("-created_at", "-pk")  # newest first, as an inbox reads

    def has_add_permission(self, request: HttpRequest) -> bool:
        # A message row comes from Twilio (a webhook) or from send_message, never from a
        # form: an added row would show a text on "our side" that was never sent.
        return False

    def render_change_form(self, request: HttpRequest, context: dict[str, Any], add: bool = False,
                           change: bool = False, form_url: str = "", obj: Any = None) -> HttpResponse:
        # The message's photos and files above its fields, as the thread shows them and
        # through the same file view of the conversation's admin (a group chat's copy
        # through the group chat, to which the file belongs too). Only for users who may
        # view conversations: to others that view answers 403, a photo would be a broken image.
        if obj is not None and attachments(obj.media) and may_view_conversations(request):
            conversation = get_conversation_model()
            context["convlink_message_files"] = message_files(obj, {
                sid: (row, admin_url(self.admin_site, conversation, "file", obj.conversation_id, sid)
                      if row.is_stored else "")
                for sid, row in files_of([obj]).items()})
        return super().render_change_form(request, context, add=add, change=change, form_url=form_url,
                                          obj=obj)

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
        # Why a text did not arrive: here, the widest cell, its label beside the date.
        return format_html("{}{}{}", text, secondary(short_sid(obj.message_sid)),
                           delivery_reason(delivery(obj)))

    @admin.display(description=_("author"), ordering="author")
    def sender(self, obj: Any) -> SafeString:
        # The direction and the forward into the group chat beneath: two columns fewer.
        details: list[Any] = [obj.get_direction_display()]
        if obj.forward_state:
            details.append(_("forward: %(state)s") % {"state": obj.get_forward_state_display()})
        if obj.forward_skip_reason:
            details.append(truncated(obj.forward_skip_reason, 60))
        return format_html("{}{}", obj.author or self.get_empty_value_display(),
                           secondary(format_html_join(" · ", "{}", ((detail,) for detail in details))))

    @admin.display(description=_("delivery"), ordering="delivery_status")
    def delivery(self, obj: Any) -> SafeString | str:
        return delivery_status(obj)

    @admin.display(description=_("sent"), ordering="date_created")
    def sent(self, obj: Any) -> SafeString:
        # Whether it arrived beneath the date: a column of its own, even its header,
        # leaves the message body no room at 1280 pixels.
        when = display_for_value(obj.date_created or obj.created_at, self.get_empty_value_display())
        found = delivery(obj)
        return format_html("{}{}", when, format_html('<span class="convlink-status">{}</span>',
                                                      delivery_label(found)) if found else "")


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
            "%(processed)d replayed, %(failed)d failed again, %(rejected)d rejected or refused."
        ) % {"processed": len(report.processed), "failed": len(report.failed),
             "rejected": len(report.rejected)}, level)
        for pk, error in report.failed:
            self.message_user(request, f"Delivery {pk}: {error}", messages.ERROR)


@admin.register(StoredMedia)
class StoredMediaAdmin(admin.ModelAdmin):
    """Customers' files, newest first: what is stored, what is not and why. Read-only:
    the download writes these rows, and a deleted row would leave its file in storage
    and be planned, and downloaded, again by ``fetch_twilio_media``.

    Each file opens through its conversation's file view, which checks the user may
    view the conversation; for a user who may not, the list names the files without
    showing them (no thumbnail that would only be a broken image) and without the
    customer's name."""

    list_display = ("shown_file", "state_label", "conversation_link", "created_at")
    list_filter = ("state",)
    search_fields = ("filename", "media_sid", "message_sid", "conversation_sid")
    date_hierarchy = "created_at"
    ordering = ("-created_at", "-pk")
    change_list_template = CHANGE_LIST_TEMPLATE
    readonly_fields = [f.name for f in StoredMedia._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        # "Customer files", not the read-only list's "Select customer file to view".
        return super().changelist_view(request, {"title": capfirst(StoredMedia._meta.verbose_name_plural),
                                                 **(extra_context or {})})

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        queryset = super().get_queryset(request)
        if not may_view_conversations(request):
            return queryset
        # The conversation's key and name for the links, in the list's own query.
        conversations = get_conversation_model()._default_manager.filter(
            conversation_sid=OuterRef("conversation_sid"))
        return queryset.annotate(**{
            f"conversation_{field}": Subquery(conversations.values(field)[:1])
            for field in ("pk", "friendly_name", "customer_phone")})

    def _url(self, obj: StoredMedia, view: str, *args: Any) -> str:
        pk = getattr(obj, "conversation_pk", None)
        return admin_url(self.admin_site, get_conversation_model(), view, pk, *args) if pk else ""

    @admin.display(description=_("file"), ordering="filename")
    def shown_file(self, obj: StoredMedia) -> SafeString:
        name = obj.filename or obj.media_sid
        details = secondary(" · ".join(filter(None, [obj.content_type or str(_("unknown type")),
                                                      filesizeformat(obj.size) if obj.size else ""])))
        url = self._url(obj, "file", obj.media_sid) if obj.is_stored else ""
        if not url:
            return format_html("{}{}", name, details)
        if not obj.is_image:  # a download: no tab of its own
            return format_html('<a href="{}">{}</a>{}', url, name, details)
        return format_html('<a href="{}" target="_blank" rel="noopener"><img class="convlink-thumbnail" '
                           'src="{}" alt="{}" loading="lazy"></a><a href="{}" target="_blank" rel="noopener">'
                           '{}</a>{}', url, url, name, url, name, details)

    @admin.display(description=_("state"), ordering="state")
    def state_label(self, obj: StoredMedia) -> SafeString:
        if obj.state == MediaState.STORED:
            when = _when(obj.stored_at) if obj.stored_at else ""
            return format_html("{}{}", obj.get_state_display(), secondary(when) if when else "")
        kind = str(_("Photo")) if obj.content_type.startswith("image/") else str(_("File"))
        details = []
        if obj.attempts:
            details.append(ngettext("%(count)d attempt", "%(count)d attempts", obj.attempts)
                           % {"count": obj.attempts})
        if obj.last_error_status and str(obj.last_error_status) not in obj.last_error:
            details.append(_("HTTP %(status)s") % {"status": obj.last_error_status})
        return format_html('<span class="convlink-file-state">{}</span>{}', describe_state(obj, kind),
                           secondary(" · ".join(details)) if details else "")

    @admin.display(description=_("conversation"), ordering="conversation_sid")
    def conversation_link(self, obj: StoredMedia) -> SafeString | str:
        url = self._url(obj, "change")
        message = secondary(format_html("{} {}", _("message"), short_sid(obj.message_sid)))
        if not url:
            return format_html("{}{}", short_sid(obj.conversation_sid), message)
        # The conversation's own words for its customer (its __str__), from the annotations.
        customer = get_conversation_model()(
            conversation_sid=obj.conversation_sid,
            friendly_name=getattr(obj, "conversation_friendly_name", None) or "",
            customer_phone=getattr(obj, "conversation_customer_phone", None) or "")
        return format_html('<a href="{}">{}</a>{}', url, str(customer), message)


class OptOutForm(forms.ModelForm):
    """Opting a phone out by hand: typed in any format, stored in E.164."""

    class Meta:
        model = OptOut
        fields = ("phone", "detail")
        labels = {"detail": _("Note")}
        help_texts = {
            "phone": _("Nothing more is sent to this phone until it is opted back in. In any format, "
                       "e.g. (415) 555-0111 or +44 20 7946 0958."),
            "detail": _("Optional: why, e.g. “asked by phone on May 3”."),
        }
        error_messages = {"phone": {"unique": _(
            "This phone already has an opt-out record: find it in the opt-out list and use its actions "
            "to opt it out or back in.")}}

    def clean_phone(self) -> str:
        phone = normalize_phone(self.cleaned_data["phone"])
        if phone is None:
            raise forms.ValidationError(_(
                "This is not a phone number. Type it with its area code, e.g. (415) 555-0111, or with "
                "its country code, e.g. +44 20 7946 0958."))
        return phone


@admin.register(OptOut)
class OptOutAdmin(OptOutActionsMixin, PhoneSearchMixin, admin.ModelAdmin):
    """The customers who opted out of texts, and back in: registered here, since the
    app owns the model.

    Nothing is edited in place and nothing is deleted: each change goes through
    ``optouts`` (its signal, its log line), and the record stays after an opt-in.
    Adding a phone opts it out; the actions opt the selected phones out or back in.
    """

    list_display = ("phone", "state", "since", "how")
    list_filter = (OptOutStateFilter, OptOutMethodFilter)
    search_fields = ("phone",)
    phone_search_lookups = ("phone",)
    change_list_template = CHANGE_LIST_TEMPLATE
    change_form_template = CHANGE_FORM_TEMPLATE
    actions = ["opt_out_selected", "opt_in_selected"]
    readonly_fields = ("state", "conversations")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        if obj is None:
            return ("phone", "detail")
        return ("phone", "state", "opted_out_at", "method", "detail", "opted_in_at", "opted_in_method",
                "opted_in_detail", "conversations")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return () if obj is None else self.readonly_fields

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        # The add form's labels and help speak of a person's note; a record's page
        # shows the model's (the keyword or error code).
        if obj is None:
            kwargs["form"] = OptOutForm
        return super().get_form(request, obj, change=change, **kwargs)

    @admin.display(description=_("state"))
    def state(self, obj: OptOut) -> SafeString:
        kind, label = ("opted-out", _("Opted out")) if obj.is_opted_out else ("opted-in", _("Opted back in"))
        return format_html('<span class="convlink-badge convlink-badge-{}">{}</span>', kind, label)

    @admin.display(description=_("since"), ordering=Coalesce("opted_in_at", "opted_out_at"))
    def since(self, obj: OptOut) -> datetime.datetime:
        return obj.opted_out_at if obj.opted_in_at is None else obj.opted_in_at

    @admin.display(description=_("how"))
    def how(self, obj: OptOut) -> StrOrPromise:
        if obj.is_opted_out:
            return capfirst(how_opted_out(obj))
        return format_html("{}{}", capfirst(how_opted_in(obj)), secondary(
            _("had opted out on %(when)s (%(how)s)") % {"when": _when(obj.opted_out_at),
                                                         "how": how_opted_out(obj)}))

    @admin.display(description=_("conversations"))
    def conversations(self, obj: OptOut) -> SafeString | str:
        url = admin_url(self.admin_site, get_conversation_model(), "changelist", q=obj.phone)
        return format_html('<a href="{}">{}</a>', url, _("This customer's conversations")) if url else ""

    def save_model(self, request: HttpRequest, obj: OptOut, form: Any, change: bool) -> None:
        # Only adding reaches here (nothing is changed in place). Through opt_out, not
        # obj.save(): the opt-out must be announced and logged like any other.
        opt_out(obj.phone, how=OptOutMethod.ADMIN, detail=obj.detail, origin="admin")
        logger.info("%s opted out of texts in the admin by %s", obj.phone, request.user.get_username())
        stored = OptOut.objects.get(phone=obj.phone)
        obj.pk, obj.opted_out_at, obj.method = stored.pk, stored.opted_out_at, stored.method
        obj._state.adding = False

    def opt_out_phones(self, queryset: QuerySet) -> list[tuple[Any, str]]:
        return [(row, row.phone) for row in queryset]


__all__ = ["ConversationAdmin", "DeliveryFilter", "LinkedFilter", "MessageAdmin", "MessageInline",
           "NeedsReplayFilter", "OptOutAdmin", "OptedOutFilter", "StoredMediaAdmin", "WebhookDeliveryAdmin"]
