from django.contrib import admin

from django_twilio_convlink.admin import ConversationAdmin, MessageAdmin

from .models import TwilioConversation, TwilioMessage


@admin.register(TwilioConversation)
class TwilioConversationAdmin(ConversationAdmin):
    # The inbox names each customer by their booking's __str__ ("tenant at apartment,
    # dates"): fetched with the list's query rather than two queries a row.
    list_select_related = ("booking__tenant", "booking__apartment", "apartment")


admin.site.register(TwilioMessage, MessageAdmin)
