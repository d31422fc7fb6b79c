"""The endpoint answers Twilio and only Twilio."""

import logging
from urllib.parse import urlencode

import pytest
from django.conf import settings
from django.db import connection
from django.http import QueryDict
from django.test import Client, RequestFactory, override_settings
from twilio.request_validator import RequestValidator

from django_twilio_convlink.signature import forged_today, refusal
from tests.helpers import WEBHOOK_PATH, TwilioClient, payload
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
    savepoint inside a request-wide transaction (which the delivery log needs)."""
    monkeypatch.setitem(connection.settings_dict, "ATOMIC_REQUESTS", True)
    with captured_sql() as capture:
        response = TwilioClient().webhook(payload("onMessageAdded_sms_from_customer"))
    assert response.status_code == 200
    assert not [q for q in capture.sql if "SAVEPOINT" in q.upper()]


# -- Requests that break before the signature is known -------------------------------
# Found by an attack on a live server: "Host: 127.0.0.1:99999" made the SDK's URL parsing
# raise inside RequestValidator.validate, and "Content-Length: ²" passed str.isdigit()
# and failed int(). Each was a 500 with an ERROR traceback, not counted as forged:
# anyone could inflate a site's 5xx alerts. Each must be a counted 4xx logged at WARNING.

MESSAGE = "onMessageAdded_sms_from_customer"
# CommonMiddleware reads the Host before any view, and Django answers a Host it refuses
# there itself; without it the view is the first to read the Host, as on a site that
# does not use CommonMiddleware.
VIEW_READS_THE_HOST = [m for m in settings.MIDDLEWARE if m != "django.middleware.common.CommonMiddleware"]


def post_refused(caplog, *, signed_url: str | None = None, data: dict[str, str] | None = None, **request):
    """POST a delivery signed for ``signed_url`` (the URL Django would build) and answer
    (response, how many forged requests it added, its records at ERROR or above)."""
    data = data or payload(MESSAGE)
    before = forged_today()
    with caplog.at_level(logging.WARNING):
        response = TwilioClient(raise_request_exception=False).webhook(data, signed_url=signed_url, **request)
    errors = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]
    return response, forged_today() - before, errors


def assert_refused(caplog, response, counted: int, errors: list[str], status: int, reason: str) -> None:
    assert response.status_code == status, response.content
    assert counted == 1
    assert errors == []
    warnings = [r.getMessage() for r in caplog.records
                if r.name.startswith("django_twilio_convlink") and r.levelno == logging.WARNING]
    assert any(reason in warning for warning in warnings), warnings
    assert nothing_written()


@pytest.mark.parametrize("header", ["Host", "X-Forwarded-Host"])
def test_port_out_of_range_in_host_is_refused_and_counted(caplog, settings, header):
    settings.USE_X_FORWARDED_HOST = header == "X-Forwarded-Host"
    host = "127.0.0.1:99999"
    response, counted, errors = post_refused(caplog, signed_url=f"http://{host}{WEBHOOK_PATH}",
                                             headers={header: host})
    assert_refused(caplog, response, counted, errors, 400, "Port out of range")


def test_port_out_of_range_in_forwarded_port_is_refused_and_counted(caplog, settings):
    # Without a Host header Django builds the host from SERVER_NAME and the port.
    settings.USE_X_FORWARDED_PORT = True
    response, counted, errors = post_refused(caplog, signed_url=f"http://testserver:99999{WEBHOOK_PATH}",
                                             headers={"X-Forwarded-Port": "99999"})
    assert_refused(caplog, response, counted, errors, 400, "Port out of range")


def test_bracketed_host_that_is_no_ip_address_is_refused_and_counted(caplog):
    # Django's host pattern takes "[a:b]" for an IPv6 address; Python's URL parser does not.
    response, counted, errors = post_refused(caplog, signed_url=f"http://[a:b]{WEBHOOK_PATH}",
                                             headers={"Host": "[a:b]"})
    assert_refused(caplog, response, counted, errors, 400, "does not appear to be an IPv4 or IPv6 address")


@pytest.mark.parametrize("length", [
    "²", "١٢", "１２", "-1", " 12", "12 ", "+12", "0x10", "1_000", "1e3", "12, 12"])
def test_content_length_that_is_no_number_of_bytes_is_refused_and_counted(caplog, length):
    response, counted, errors = post_refused(caplog, CONTENT_LENGTH=length)
    assert_refused(caplog, response, counted, errors, 400, "is not a number of bytes")


def test_oversized_body_is_refused_and_counted(caplog, settings):
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "MAX_REQUEST_BYTES": 1000}
    response, counted, errors = post_refused(caplog, data=payload(MESSAGE, Body="x" * 2000))
    assert_refused(caplog, response, counted, errors, 413, "over MAX_REQUEST_BYTES")


def test_content_length_longer_than_int_reads_is_over_the_limit(caplog):
    # int() refuses more than 4,300 digits (ValueError), str.isdigit() does not.
    response, counted, errors = post_refused(caplog, CONTENT_LENGTH="9" * 5000)
    assert_refused(caplog, response, counted, errors, 413, "over MAX_REQUEST_BYTES")


@pytest.mark.parametrize("host", ["rentals.example.com.evil.test", "a b", "", "host:", "tëst", "x/y", "[::1"])
def test_host_django_refuses_is_refused_by_the_view_and_counted(caplog, settings, host):
    settings.ALLOWED_HOSTS = ["rentals.example.com", "testserver"]
    settings.MIDDLEWARE = VIEW_READS_THE_HOST
    response, counted, errors = post_refused(caplog, headers={"Host": host})
    assert_refused(caplog, response, counted, errors, 400, "Invalid HTTP_HOST header")


def test_forwarded_host_django_refuses_is_refused_by_the_view_and_counted(caplog, settings):
    settings.USE_X_FORWARDED_HOST = True
    settings.MIDDLEWARE = VIEW_READS_THE_HOST
    response, counted, errors = post_refused(caplog, headers={"X-Forwarded-Host": "evil.test, testserver"})
    assert_refused(caplog, response, counted, errors, 400, "Invalid HTTP_HOST header")


def multipart(*parts: str) -> str:
    return "".join(f"--b\r\n{part}\r\n" for part in parts) + "--b--\r\n"


def file_part(content: str, encoding: str = "8bit") -> str:
    return (f'Content-Disposition: form-data; name="f"; filename="f.txt"\r\n'
            f"Content-Transfer-Encoding: {encoding}\r\n\r\n{content}")


MULTIPART = "multipart/form-data; boundary=b"


@pytest.mark.parametrize(("body", "content_type", "reason"), [
    ("&".join(f"f{i}=1" for i in range(1001)), "application/x-www-form-urlencoded", "TooManyFieldsSent"),
    (multipart(*[f'Content-Disposition: form-data; name="f{i}"\r\n\r\n1' for i in range(1001)]), MULTIPART,
     "TooManyFieldsSent"),
    (multipart(*[file_part("x")] * 101), MULTIPART, "TooManyFilesSent"),
    (multipart(file_part("not base64!", "base64")), MULTIPART, "Could not decode base64 data"),
    ("--x\r\n", "multipart/form-data", "Invalid boundary in multipart"),
    ("--x\r\n", "multipart/form-data; boundary=\x7f", "Invalid boundary in multipart"),
    ("AccountSid=AC1", "application/x-www-form-urlencoded; charset=latin-1", "must be UTF-8 encoded"),
])
def test_body_django_cannot_parse_is_refused_and_counted(caplog, body, content_type, reason):
    response, counted, errors = post_unsigned(caplog, body, content_type)
    assert_refused(caplog, response, counted, errors, 400, reason)


def post_unsigned(caplog, body: str, content_type: str):
    """POST ``body`` as it is (UTF-8 bytes, whatever charset ``content_type`` names)
    with a signature that matches nothing; answer as ``post_refused``."""
    before = forged_today()
    with caplog.at_level(logging.WARNING):
        # generic(), not post(): post() encodes the body in the declared charset, and
        # "rot13" or "hex" is no text encoding (LookupError in the test client).
        response = Client(raise_request_exception=False).generic(
            "POST", WEBHOOK_PATH, data=body.encode(), content_type=content_type,
            headers={"X-Twilio-Signature": "c2lnbmVk"})
    errors = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]
    return response, forged_today() - before, errors


# Unsigned multipart bodies in these charsets answered 500 before the signature was
# checked: Django decodes a form with any codec Python knows, and "rot13" and "hex"
# are codecs but no text encodings (LookupError), while "unicode_escape" reads the
# characters \ud800 as a lone surrogate, which the SDK cannot encode for its HMAC
# (UnicodeEncodeError).
@pytest.mark.parametrize("charset", ["rot13", "hex", "unicode_escape", "raw_unicode_escape"])
def test_multipart_body_in_a_charset_that_is_no_utf8_is_refused_and_counted(caplog, charset):
    body = multipart('Content-Disposition: form-data; name="Body"\r\n\r\n\\ud800')
    response, counted, errors = post_unsigned(caplog, body, f"{MULTIPART}; charset={charset}")
    assert_refused(caplog, response, counted, errors, 400, "must be UTF-8 encoded")


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", MULTIPART, "text/plain"])
@pytest.mark.parametrize("charset", ["latin-1", "utf-16", "utf-8-sig", "base64", "no-such-codec", ""])
def test_body_in_a_charset_that_is_no_utf8_is_refused_and_counted(caplog, content_type, charset):
    response, counted, errors = post_unsigned(caplog, "AccountSid=AC1", f"{content_type}; charset={charset}")
    assert_refused(caplog, response, counted, errors, 400, "must be UTF-8 encoded")


@pytest.mark.parametrize("content_type", [
    "application/x-www-form-urlencoded; charset=UTF-8",  # what Twilio sends
    "application/x-www-form-urlencoded; charset=utf-8",
    f"{MULTIPART}; charset=utf-8",
    f"{MULTIPART}; charset=us-ascii",
])
def test_signed_delivery_declaring_utf8_is_processed(content_type):
    data = payload(MESSAGE)
    signature = RequestValidator(settings.AUTH_TOKEN).compute_signature(
        f"http://testserver{WEBHOOK_PATH}", data)
    body = (urlencode(data) if content_type.startswith("application/x-www-form-urlencoded")
            else multipart(*[f'Content-Disposition: form-data; name="{name}"\r\n\r\n{value}'
                             for name, value in data.items()]))
    response = Client().post(WEBHOOK_PATH, data=body, content_type=content_type,
                             headers={"X-Twilio-Signature": signature})
    assert response.status_code == 200, response.content
    assert ChatMessage.objects.get().message_sid == data["MessageSid"]


def test_parameters_that_are_no_utf8_text_never_reach_the_sdk():
    # However a lone surrogate got into request.POST (a site's middleware decoding the
    # body itself, a Django that reads a charset differently), it is a 400, never the
    # SDK's UnicodeEncodeError.
    request = RequestFactory().post(WEBHOOK_PATH, data="", content_type="application/x-www-form-urlencoded",
                                    headers={"X-Twilio-Signature": "c2lnbmVk"})
    request.POST = QueryDict("Body=%5Cud800", encoding="unicode_escape")
    refused = refusal(request)
    assert refused is not None and refused.status == 400, refused
    assert "'Body' is no UTF-8 text" in refused.reason


def test_body_over_django_memory_limit_is_refused_and_counted(caplog, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response, counted, errors = post_refused(caplog, data=payload(MESSAGE, Body="x" * 2000))
    assert_refused(caplog, response, counted, errors, 400, "RequestDataTooBig")


def test_a_signed_request_is_not_counted_as_forged(twilio_client):
    before = forged_today()
    assert twilio_client.webhook(payload(MESSAGE)).status_code == 200
    assert forged_today() == before
