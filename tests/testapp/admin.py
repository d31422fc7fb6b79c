from django.contrib import admin

from django_twilio_convlink.admin import ConversationAdmin, MessageAdmin

from .models import ChatConversation, ChatMessage, Guest, Property, Reservation

admin.site.register(ChatConversation, ConversationAdmin)
admin.site.register(ChatMessage, MessageAdmin)
# The reservation admin can search, so a conversation's booking is chosen with an
# autocomplete; the property admin cannot, so its apartment keeps the raw id box.
admin.site.register(Reservation, search_fields=["guest__full_name", "guest__mobile", "unit__title"],
                    ordering=["-pk"])
admin.site.register([Property, Guest])
