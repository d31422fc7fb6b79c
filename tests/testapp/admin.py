from django.contrib import admin

from django_twilio_convlink.admin import ConversationAdmin, MessageAdmin

from .models import ChatConversation, ChatMessage, Guest, Property, Reservation

admin.site.register(ChatConversation, ConversationAdmin)
admin.site.register(ChatMessage, MessageAdmin)
admin.site.register([Property, Guest, Reservation])
