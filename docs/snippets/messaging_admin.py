# messaging/admin.py
from django.contrib import admin

from django_twilio_convlink.admin import ConversationAdmin, MessageAdmin

from .models import TwilioConversation, TwilioMessage

admin.site.register(TwilioConversation, ConversationAdmin)
admin.site.register(TwilioMessage, MessageAdmin)
