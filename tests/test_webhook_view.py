"""Behaviour 1: the endpoint answers Twilio and only Twilio."""

import logging

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client, override_settings
from twilio.request_validator import RequestValidator

from tests.conftest import WEBHOOK_PATH, TwilioClient, payload
from tests.testapp.models import ChatConversation, ChatMessage

pytestmark = pytest.mark.django_db


def nothing_written() -> bool:
    return not ChatConversation.objects.exists() and not ChatMessage.objects.exists()


def test_signed_message_is_stored(twilio_client):
    response = twilio_client.webhook(payload("onMessageAdded_sms_from_customer"))
    assert response.status_code == 200
    assert ChatMessage.objects.count() == 1


def test_head_probe_answers_200(client):
    assert client.head(WEBHOOK_PATH).status_code == 200


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete", "options"])
def test_other_methods_are_not_allowed(client, method):
    assert getattr(client, method)(WEBHOOK_PATH).status_code == 405


def test_csrf_enforcing_client_is_accepted():
    client = TwilioClient(enforce_csrf_checks=True)
    assert client.webhook(payload("onMessageAdded_sms_from_customer")).status_code == 200


def test_login_required_middleware_does_not_redirect(twilio_client, settings):
    assert "django.contrib.auth.middleware.LoginRequiredMiddleware" in settings.MIDDLEWARE
    response = twilio_client.webhook(payload("onMessageAdded_sms_from_customer"))
    assert response.status_code == 200


def test_bad_signature_is_refused_writes_nothing_and_logs_why(twilio_client, caplog):
    with caplog.at_level(logging.WARNING, logger="django_twilio_convlink"):
        response = twilio_client.webhook(payload("onMessageAdded_sms_from_customer"),
                                         signature="bm90IGEgc2lnbmF0dXJl")
    assert response.status_code == 403
    assert nothing_written()
    assert "does not match" in caplog.text
    assert "http://testserver/twilio/webhook/" in caplog.text


def test_missing_signature_is_refused(caplog):
    with caplog.at_level(logging.WARNING, logger="django_twilio_convlink"):
        response = Client().post(WEBHOOK_PATH, payload("onMessageAdded_sms_from_customer"))
    assert response.status_code == 403
    assert nothing_written()
    assert "no X-Twilio-Signature header" in caplog.text


def test_signature_from_another_token_is_refused():
    client = TwilioClient(token="someone-elses-token")
    assert client.webhook(payload("onMessageAdded_sms_from_customer")).status_code == 403
    assert nothing_written()


def test_tampered_field_is_refused(twilio_client):
    data = payload("onMessageAdded_sms_from_customer")
    signature = RequestValidator(settings.AUTH_TOKEN).compute_signature(
        "http://testserver/twilio/webhook/", data)
    data["Body"] = "Please refund me $5,000"
    assert twilio_client.webhook(data, signature=signature).status_code == 403
    assert nothing_written()


@override_settings(DEBUG=True)
def test_debug_does_not_switch_validation_off():
    response = TwilioClient(token="wrong").webhook(payload("onMessageAdded_sms_from_customer"))
    assert response.status_code == 403


def test_https_behind_proxy_with_secure_proxy_ssl_header(settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    client = TwilioClient()
    response = client.webhook(payload("onMessageAdded_sms_from_customer"),
                              signed_url="https://testserver/twilio/webhook/",
                              HTTP_X_FORWARDED_PROTO="https")
    assert response.status_code == 200


def test_https_behind_proxy_without_settings_fails_and_logs_the_http_url(caplog):
    with caplog.at_level(logging.WARNING, logger="django_twilio_convlink"):
        response = TwilioClient().webhook(payload("onMessageAdded_sms_from_customer"),
                                          signed_url="https://testserver/twilio/webhook/",
                                          HTTP_X_FORWARDED_PROTO="https")
    assert response.status_code == 403
    assert "validated against http://testserver/twilio/webhook/" in caplog.text


def test_forwarded_host_is_used_when_enabled(settings):
    settings.USE_X_FORWARDED_HOST = True
    response = TwilioClient().webhook(payload("onMessageAdded_sms_from_customer"),
                                      signed_url="http://public.example.com/twilio/webhook/",
                                      HTTP_X_FORWARDED_HOST="public.example.com")
    assert response.status_code == 200


def test_webhook_url_setting_is_what_gets_validated(settings):
    public = "https://rentals.example.com/hooks/twilio/webhook/"
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "WEBHOOK_URL": public}
    client = TwilioClient()
    assert client.webhook(payload("onMessageAdded_sms_from_customer"), signed_url=public).status_code == 200
    assert client.webhook(payload("onMessageAdded_sms_from_customer")).status_code == 403


def test_query_string_is_part_of_the_signed_url(twilio_client):
    path = WEBHOOK_PATH + "?site=paris"
    response = twilio_client.webhook(payload("onMessageAdded_sms_from_customer"), path=path)
    assert response.status_code == 200


def test_missing_auth_token_fails_closed(settings):
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "AUTH_TOKEN": ""}
    assert TwilioClient().webhook(payload("onMessageAdded_sms_from_customer")).status_code == 403
    assert nothing_written()


def test_validation_can_be_switched_off_explicitly(settings):
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "VALIDATE_SIGNATURE": False}
    response = Client().post(WEBHOOK_PATH, payload("onMessageAdded_sms_from_customer"))
    assert response.status_code == 200


def test_atomic_requests_site_still_works(monkeypatch, twilio_client):
    monkeypatch.setitem(connection.settings_dict, "ATOMIC_REQUESTS", True)
    response = twilio_client.webhook(payload("onMessageAdded_sms_from_customer"))
    assert response.status_code == 200
    assert ChatMessage.objects.count() == 1


def test_url_is_reversible_by_name():
    from django.urls import reverse

    assert reverse("twilio_convlink:webhook") == WEBHOOK_PATH


def test_url_without_trailing_slash_is_served_not_redirected(settings):
    assert settings.APPEND_SLASH
    path = WEBHOOK_PATH.rstrip("/")
    response = TwilioClient().webhook(payload("onMessageAdded_sms_from_customer"), path=path)
    assert response.status_code == 200
    assert ChatMessage.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_atomic_requests_does_not_wrap_the_view(monkeypatch, captured_sql):
    """The view is non_atomic_requests: its own transaction is the outermost one, not a
    savepoint inside a request-wide transaction (which issue 4's delivery log needs)."""
    monkeypatch.setitem(connection.settings_dict, "ATOMIC_REQUESTS", True)
    with captured_sql() as capture:
        response = TwilioClient().webhook(payload("onMessageAdded_sms_from_customer"))
    assert response.status_code == 200
    assert not [q for q in capture.sql if "SAVEPOINT" in q.upper()]
