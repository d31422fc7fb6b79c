"""Settings mistakes surface at `manage.py check`, with IDs and hints."""

import pytest
from django.core.checks import run_checks
from django.core.management import call_command

from django_twilio_convlink.api import BaseApiBackend

SDK = "django_twilio_convlink.api.SdkBackend"


def check_settings(deploy: bool = False):
    """What `manage.py check --tag twilio_convlink` reports (with `--deploy`: with the
    deployment checks too): the app's checks, through Django's registry."""
    return run_checks(tags=["twilio_convlink"], include_deployment_checks=deploy)


def ids(deploy: bool = False, **changes) -> set[str]:
    from django.conf import settings
    from django.test import override_settings

    with override_settings(TWILIO_CONVLINK={**settings.TWILIO_CONVLINK, **changes}):
        return {message.id for message in check_settings(deploy)}


@pytest.fixture
def shared_cache(settings, tmp_path):
    """A cache every process shares, as a deployed site has (the test settings keep
    Django's per-process default, which W008 reports)."""
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
                                   "LOCATION": str(tmp_path / "cache")}}


@pytest.mark.django_db  # Django 6.1 runs the database checks too
def test_the_test_settings_are_clean(shared_cache):
    assert ids() == set()
    call_command("check")


@pytest.mark.parametrize(("changes", "expected"), [
    ({"CONVERSATION_MODEL": None}, "twilio_convlink.E001"),
    ({"BOOKING_MODEL": "testapp.NoSuchModel"}, "twilio_convlink.E002"),
    ({"APARTMENT_MODEL": "not-a-label"}, "twilio_convlink.E002"),
    ({"MESSAGE_MODEL": "testapp.Guest"}, "twilio_convlink.E003"),
    ({"BOOKING_PHONE_FIELD": "guest__phone"}, "twilio_convlink.E004"),
    ({"BOOKING_PHONE_FIELD": "tenant__mobile"}, "twilio_convlink.E004"),
    ({"BOOKING_PHONE_FIELD": "guest"}, "twilio_convlink.E004"),
    ({"BOOKING_PHONE_FIELD": "check_in__mobile"}, "twilio_convlink.E004"),
    # A reverse relation is not a phone field (the booking has many of them).
    ({"BOOKING_PHONE_FIELD": "guest__reservations"}, "twilio_convlink.E004"),
    ({"BOOKING_APARTMENT_FIELD": "guest"}, "twilio_convlink.E005"),
    ({"BOOKING_APARTMENT_FIELD": "check_in"}, "twilio_convlink.E005"),
    ({"BOOKING_END_FIELD": None}, "twilio_convlink.E006"),
    ({"BOOKING_START_FIELD": "guest"}, "twilio_convlink.E014"),
    ({"BOOKING_WINDOW_DAYS": -1}, "twilio_convlink.E015"),
    ({"AUTH_TOKEN": ""}, "twilio_convlink.E007"),
    ({"MANAGER_PHONE": "call me maybe"}, "twilio_convlink.E008"),
    ({"SYSTEM_IDENTITIES": ["+1 (555"]}, "twilio_convlink.E017"),
    ({"SYSTEM_IDENTITIES": "night-desk"}, "twilio_convlink.E016"),
    ({"PHONE_REGION": "XX"}, "twilio_convlink.E009"),
    ({"VALIDATE_SIGNATURE": False}, "twilio_convlink.W001"),
    ({"TWILIO_PHONE": ""}, "twilio_convlink.W002"),
    ({"AUTH_TOKNE": "typo"}, "twilio_convlink.W003"),
    ({"API_BACKEND": "no.such.Backend"}, "twilio_convlink.E011"),
    ({"TASK_BACKEND": "celery"}, "twilio_convlink.E012"),
    ({"API_BACKEND": SDK, "ACCOUNT_SID": ""}, "twilio_convlink.W004"),
    ({"MANAGER_PHONE": "+447911123456"}, "twilio_convlink.W005"),
    ({"ENQUEUE_IN_TRANSACTION": True}, "twilio_convlink.W006"),  # the default alias is immediate
    ({"ENQUEUE_IN_TRANSACTION": True, "TASK_BACKEND": "dummy"}, "twilio_convlink.W006"),
])
def test_each_mistake_has_its_id(changes, expected):
    assert expected in ids(**changes)


def test_enqueue_in_transaction_is_quiet_with_a_database_queue():
    assert "twilio_convlink.W006" not in ids(ENQUEUE_IN_TRANSACTION=True, TASK_BACKEND="database")


def test_messages_name_the_setting_and_give_a_hint(shared_cache):
    from django.conf import settings
    from django.test import override_settings

    broken = {**settings.TWILIO_CONVLINK, "BOOKING_PHONE_FIELD": "guest__phone"}
    with override_settings(TWILIO_CONVLINK=broken):
        [message] = check_settings()
    assert 'TWILIO_CONVLINK["BOOKING_PHONE_FIELD"]' in message.msg
    assert "tenant__phone" in message.hint


def test_settings_not_a_dict():
    from django.test import override_settings

    with override_settings(TWILIO_CONVLINK=["oops"]):
        assert [m.id for m in check_settings()] == ["twilio_convlink.E018"]


def test_group_chat_checks_are_quiet_when_it_is_off(shared_cache):
    assert ids(GROUP_CHAT=False, TASK_BACKEND="celery", MANAGER_PHONE="+447911123456") == set()


def test_missing_tasks_framework_says_what_to_install(monkeypatch):
    # Stands in for a Django 5.2 site without the django-tasks backport.
    from django_twilio_convlink import tasks

    monkeypatch.setattr(tasks, "TASKS_AVAILABLE", False)
    [message] = [m for m in check_settings() if m.id == "twilio_convlink.E010"]
    assert "django-tasks" in message.hint


def test_task_queue_must_be_one_the_backend_serves(settings):
    from django_twilio_convlink.tasks import task_backends

    settings.TASKS = {**settings.TASKS, "default": {**settings.TASKS["default"], "QUEUES": ["twilio"]}}
    task_backends.__dict__.pop("settings", None)  # the handler caches the parsed TASKS
    try:
        assert "twilio_convlink.E013" in ids()
        assert "twilio_convlink.E013" not in ids(TASK_QUEUE="twilio")
    finally:
        task_backends.__dict__.pop("settings", None)


# One ID, one problem: a site silences a check by its ID (SILENCED_SYSTEM_CHECKS),
# which must not silence another mistake with it.
PROBLEMS = [
    ({"BOOKING_PHONE_FIELD": None}, "is not set"),
    ({"TWILIO_CONVLINK": ["oops"]}, "must be a dict"),
    ({"BOOKING_END_FIELD": None}, "must be set together"),
    ({"BOOKING_START_FIELD": "guest"}, "is not a date field"),
    ({"BOOKING_WINDOW_DAYS": -1}, "non-negative integer"),
    ({"MANAGER_PHONE": "call me maybe"}, "is not a phone number"),
    ({"SYSTEM_IDENTITIES": "night-desk"}, "must be a list"),
    ({"SYSTEM_IDENTITIES": ["+1 (555"]}, "looks like a phone number"),
    ({"OPT_OUT_KEYWORDS": "STOP"}, "must be a list of non-empty strings"),
    ({"OPT_OUT_KEYWORDS": ["ARRET"]}, "still counts them opted in"),
    ({"OPT_IN_KEYWORDS": ["START", "YES", "STOP"]}, "both hold"),
    ({"OPT_IN_KEYWORDS": ["START"]}, "still counts them opted out"),
]


def test_each_problem_has_an_id_of_its_own(settings):
    from django.test import override_settings

    seen: dict[str, str] = {}
    for changes, problem in PROBLEMS:
        site = changes["TWILIO_CONVLINK"] if "TWILIO_CONVLINK" in changes else {
            **settings.TWILIO_CONVLINK, **changes}
        with override_settings(TWILIO_CONVLINK=site):
            [message] = [m for m in check_settings() if problem in m.msg]
        assert seen.setdefault(message.id, problem) == problem, f"{message.id} is used for two problems"


@pytest.mark.parametrize("changes", [
    {"SUBACCOUNT_AUTH_TOKENS": {"AC" + "1" * 32: "subaccount-token"}},
    {"WEBHOOK_SHARED_KEYS": {"webhooks_sharedkey_1": "shared-secret"}},
    {"SECONDARY_AUTH_TOKENS": ["the-next-token"]},
])
def test_a_site_validating_without_the_main_auth_token_passes(changes):
    # The signature code accepts each of these without AUTH_TOKEN (signature.py).
    assert "twilio_convlink.E007" not in ids(AUTH_TOKEN="", **changes)


def test_nothing_to_validate_with_is_still_E007():
    assert "twilio_convlink.E007" in ids(AUTH_TOKEN="", SECONDARY_AUTH_TOKENS=[], SUBACCOUNT_AUTH_TOKENS={},
                                         WEBHOOK_SHARED_KEYS={})


@pytest.fixture
def no_tasks_framework(monkeypatch, settings):
    """Django 5.2 without django-tasks and a site that configured no TASKS
    (tests/webhook/test_default_install.py runs the same without the framework at all)."""
    from django.conf import global_settings

    from django_twilio_convlink import tasks

    monkeypatch.setattr(tasks, "TASKS_AVAILABLE", False)
    if hasattr(global_settings, "TASKS"):  # Django 6.0+, where it cannot be absent
        settings.TASKS = global_settings.TASKS
    else:
        del settings.TASKS


def test_no_tasks_framework_with_the_default_settings_is_a_deployment_warning(no_tasks_framework):
    assert not {"twilio_convlink.E010", "twilio_convlink.W007"} & ids()
    found = {m.id: m for m in check_settings(deploy=True)}
    assert "twilio_convlink.E010" not in found
    warning = found["twilio_convlink.W007"]
    assert warning.msg.startswith("No tasks framework: the group chat forwards run in the webhook's process")
    assert "django-twilio-convlink[tasks]" in warning.hint


def test_the_immediate_task_backend_is_a_deployment_warning():
    # The test site's "default" alias is the immediate backend, Django's default TASKS.
    assert "twilio_convlink.W007" not in ids()
    [warning] = [m for m in check_settings(deploy=True) if m.id == "twilio_convlink.W007"]
    assert warning.msg.startswith('The task backend "default" is the immediate one (')
    assert "in the webhook's process" in warning.msg
    assert "TASKS['default']" in warning.hint and "django-twilio-convlink[rq]" in warning.hint


@pytest.mark.parametrize("changes", [
    {"TASK_BACKEND": "database"},  # a worker runs them
    {"GROUP_CHAT": False, "MEDIA_DOWNLOAD": False},  # no Twilio calls to make
])
def test_a_worker_or_no_work_is_quiet_at_deploy(changes):
    assert "twilio_convlink.W007" not in ids(deploy=True, **changes)


def test_the_media_downloads_alone_are_work_for_a_worker(settings):
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "GROUP_CHAT": False, "MEDIA_DOWNLOAD": True}
    [warning] = [m for m in check_settings(deploy=True) if m.id == "twilio_convlink.W007"]
    assert ": the downloads of customers' files run in the webhook's process" in warning.msg


@pytest.mark.parametrize("changes", [
    {"TASK_BACKEND": "celery"}, {"TASK_QUEUE": "twilio"}, {"ENQUEUE_IN_TRANSACTION": True}])
def test_no_tasks_framework_with_task_settings_is_E010(no_tasks_framework, changes):
    found = ids(**changes)
    assert "twilio_convlink.E010" in found and "twilio_convlink.W007" not in found


def test_no_tasks_framework_with_a_tasks_setting_is_E010(no_tasks_framework, settings):
    settings.TASKS = {"default": {"BACKEND": "django_tasks.backends.immediate.ImmediateBackend"}}
    assert "twilio_convlink.E010" in ids()


@pytest.mark.parametrize(("backend", "why"), [
    ("django.core.cache.backends.locmem.LocMemCache", "per process"),
    ("django.core.cache.backends.dummy.DummyCache", "stores nothing"),
])
def test_a_default_cache_that_cannot_count_forged_requests_is_a_deployment_warning(settings, backend, why):
    settings.CACHES = {"default": {"BACKEND": backend}}
    assert "twilio_convlink.W008" not in ids()
    [warning] = [m for m in check_settings(deploy=True) if m.id == "twilio_convlink.W008"]
    assert backend in warning.msg and why in warning.msg
    assert "CACHES" in warning.hint


def test_a_shared_default_cache_is_quiet(shared_cache):
    assert "twilio_convlink.W008" not in ids(deploy=True)


def test_the_tags_select_the_checks(settings):
    # `manage.py check --tag security` reports a signature problem; `--tag models` does not.
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "VALIDATE_SIGNATURE": False}
    assert "twilio_convlink.W001" in {m.id for m in run_checks(tags=["security"])}
    assert "twilio_convlink.W001" not in {m.id for m in run_checks(tags=["models"])}
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "BOOKING_PHONE_FIELD": "guest__phone"}
    assert "twilio_convlink.E004" in {m.id for m in run_checks(tags=["models"])}


@pytest.mark.parametrize("tag", ["models", "security", "caches"])
def test_an_unreadable_setting_is_reported_under_every_tag(tag):
    from django.test import override_settings

    with override_settings(TWILIO_CONVLINK=["oops"]):
        assert "twilio_convlink.E018" in {m.id for m in run_checks(tags=[tag])}


@pytest.mark.django_db
def test_the_status_leaves_silenced_checks_out(settings):
    from io import StringIO

    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "VALIDATE_SIGNATURE": False}
    out = StringIO()
    call_command("check_twilio_status", "--detailed", stdout=out)
    assert "twilio_convlink.W001" in out.getvalue()
    settings.SILENCED_SYSTEM_CHECKS = ["twilio_convlink.W001"]
    out = StringIO()
    call_command("check_twilio_status", "--detailed", stdout=out)
    assert "twilio_convlink.W001" not in out.getvalue()


# --- Opt-out keywords: Twilio acts on its own words whatever the site lists ---------------

KEYWORD_IDS = {"twilio_convlink.E020", "twilio_convlink.W009", "twilio_convlink.W010", "twilio_convlink.W011"}


def test_the_default_keywords_are_quiet():
    from django.conf import settings

    assert "OPT_OUT_KEYWORDS" not in settings.TWILIO_CONVLINK  # the test site keeps the defaults
    assert not KEYWORD_IDS & ids()


@pytest.mark.parametrize(("opt_out", "opt_in"), [
    # A site's list replaces Twilio's: one that starts from it and adds its own words.
    (["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT", "ARRET"],
     ["START", "YES", "UNSTOP", "OUI"]),
    # Compared as the webhook matches messages: trimmed, in any case; a tuple is a list too.
    ((" stop", "StopAll ", "unsubscribe", "cancel", "end", "quit", "revoke", "optout", "Arrêt"),
     ("start", " Yes ", "unstop")),
])
def test_a_site_list_that_keeps_twilios_words_is_quiet(opt_out, opt_in):
    assert not KEYWORD_IDS & ids(OPT_OUT_KEYWORDS=opt_out, OPT_IN_KEYWORDS=opt_in)


@pytest.mark.parametrize(("changes", "expected"), [
    # A string would be read letter by letter: a customer's "t" would opt them out.
    ({"OPT_OUT_KEYWORDS": "STOP"}, "twilio_convlink.E020"),
    ({"OPT_IN_KEYWORDS": "START"}, "twilio_convlink.E020"),
    ({"OPT_OUT_KEYWORDS": None}, "twilio_convlink.E020"),
    ({"OPT_OUT_KEYWORDS": {"STOP": True}}, "twilio_convlink.E020"),
    # A blank word would make a blank message an opt-out.
    ({"OPT_OUT_KEYWORDS": ["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT",
                           "  "]}, "twilio_convlink.E020"),
    ({"OPT_IN_KEYWORDS": ["START", "YES", "UNSTOP", ""]}, "twilio_convlink.E020"),
    ({"OPT_IN_KEYWORDS": ["START", "YES", "UNSTOP", 1]}, "twilio_convlink.E020"),
    ({"OPT_OUT_KEYWORDS": ["ARRET"]}, "twilio_convlink.W009"),
    ({"OPT_OUT_KEYWORDS": []}, "twilio_convlink.W009"),
    ({"OPT_IN_KEYWORDS": ["start", "yes", "unstop", " STOP "]}, "twilio_convlink.W010"),
    ({"OPT_IN_KEYWORDS": ["START", "YES"]}, "twilio_convlink.W011"),
    # Twilio's START moved to the opt-out list: in both lists no longer, opted in by nothing.
    ({"OPT_OUT_KEYWORDS": ["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT",
                           "START"], "OPT_IN_KEYWORDS": ["YES", "UNSTOP"]}, "twilio_convlink.W011"),
])
def test_each_keyword_mistake_has_its_id(changes, expected):
    assert expected in ids(**changes)


def test_a_missing_twilio_opt_out_word_is_named_with_error_21610():
    from django.conf import settings
    from django.test import override_settings

    site = {**settings.TWILIO_CONVLINK, "OPT_OUT_KEYWORDS": ["stop", "cancel", "end", "optout", "ARRET"]}
    with override_settings(TWILIO_CONVLINK=site):
        [warning] = [m for m in check_settings() if m.id == "twilio_convlink.W009"]
    assert "leaves out STOPALL, UNSUBSCRIBE, QUIT, REVOKE," in warning.msg
    assert "ARRET" not in warning.msg and "CANCEL" not in warning.msg
    assert "21610" in warning.msg and "keeps trying to send to them and failing" in warning.msg
    assert "TWILIO_OPT_OUT_KEYWORDS" in warning.hint and "twilio_convlink.W009" in warning.hint


def test_a_missing_twilio_opt_in_word_says_the_app_keeps_refusing():
    from django.conf import settings
    from django.test import override_settings

    with override_settings(TWILIO_CONVLINK={**settings.TWILIO_CONVLINK, "OPT_IN_KEYWORDS": ["START"]}):
        [warning] = [m for m in check_settings() if m.id == "twilio_convlink.W011"]
    assert "leaves out YES, UNSTOP," in warning.msg and "skips every send" in warning.msg
    assert "TWILIO_OPT_IN_KEYWORDS" in warning.hint and "twilio_convlink.W011" in warning.hint


def test_a_word_in_both_lists_is_named_as_the_site_spelled_it():
    from django.conf import settings
    from django.test import override_settings

    site = {**settings.TWILIO_CONVLINK, "OPT_IN_KEYWORDS": ["START", "YES", "UNSTOP", " Quit "]}
    with override_settings(TWILIO_CONVLINK=site):
        [warning] = [m for m in check_settings() if m.id == "twilio_convlink.W010"]
    assert "both hold Quit:" in warning.msg and "as an opt-out" in warning.msg


@pytest.mark.parametrize("changes", [{"OPT_OUT_KEYWORDS": "STOP"}, {"OPT_IN_KEYWORDS": ["START", ""]}])
def test_a_keyword_setting_that_is_no_list_is_only_E020(changes):
    # Its words cannot be compared with Twilio's or the other list's: no warning guesses.
    from django.conf import settings
    from django.test import override_settings

    with override_settings(TWILIO_CONVLINK={**settings.TWILIO_CONVLINK, **changes}):
        [error] = [m for m in check_settings() if m.id in KEYWORD_IDS]
    assert error.id == "twilio_convlink.E020"
    assert f'["{next(iter(changes))}"] must be a list of non-empty strings' in error.msg


# --- Customers' files -------------------------------------------------------------------------

@pytest.mark.parametrize(("changes", "expected"), [
    ({"MEDIA_STORAGE": "photos"}, "twilio_convlink.E021"),
    ({"MEDIA_BASE_URL": "mcs.us1.twilio.com"}, "twilio_convlink.E022"),
    ({"MEDIA_BASE_URL": "ftp://mcs.us1.twilio.com"}, "twilio_convlink.E022"),
    ({"MEDIA_BASE_URL": "https://mcs.us1.twilio.com/v1"}, "twilio_convlink.E022"),
    ({"MEDIA_BASE_URL": None}, "twilio_convlink.E022"),
    # An empty query or fragment still moves the /v1/... path out of the path.
    ({"MEDIA_BASE_URL": "https://mcs.us1.twilio.com?"}, "twilio_convlink.E022"),
    ({"MEDIA_BASE_URL": "https://mcs.us1.twilio.com#"}, "twilio_convlink.E022"),
    ({"MEDIA_BASE_URL": "https://user:secret@mcs.us1.twilio.com"}, "twilio_convlink.E022"),
    ({"MEDIA_BASE_URL": "https://:443"}, "twilio_convlink.E022"),
    ({"MEDIA_BASE_URL": "https://mcs.us1.twilio.com:99999"}, "twilio_convlink.E022"),
    ({"MEDIA_BASE_URL": "https://mcs.us1.twilio.com\n"}, "twilio_convlink.E022"),
    # urlsplit raises for these: the check must report them, not raise.
    ({"MEDIA_BASE_URL": "http://[::1"}, "twilio_convlink.E022"),
    ({"MEDIA_BASE_URL": "https://mcs.us1.twilio.com:port"}, "twilio_convlink.E022"),
    ({"MEDIA_STORAGE": ["default"]}, "twilio_convlink.E021"),
    ({"MEDIA_STORAGE": None}, "twilio_convlink.E021"),
    ({"MEDIA_MAX_BYTES": 0}, "twilio_convlink.E023"),
    ({"MEDIA_MAX_ATTEMPTS": "8"}, "twilio_convlink.E023"),
    ({"MEDIA_RETRY_DELAY": True}, "twilio_convlink.E023"),
    ({"MEDIA_RETENTION_DAYS": 0}, "twilio_convlink.E024"),
    ({"MEDIA_RETENTION_DAYS": "90"}, "twilio_convlink.E024"),
    ({"MEDIA_DOWNLOAD": True, "ACCOUNT_SID": "", "GROUP_CHAT": False, "API_BACKEND": SDK},
     "twilio_convlink.W012"),
    # The key wins over the token (media.fetch.credentials_for): half a key fails every file.
    ({"MEDIA_DOWNLOAD": True, "API_KEY_SID": "SK" + "1" * 32, "API_KEY_SECRET": "", "API_BACKEND": SDK},
     "twilio_convlink.W012"),
])
def test_each_media_mistake_has_its_id(shared_cache, changes, expected):
    assert ids(**changes) == {expected}


@pytest.mark.parametrize("changes", [
    {"MEDIA_DOWNLOAD": True},
    {"MEDIA_DOWNLOAD": True, "MEDIA_BASE_URL": "http://127.0.0.1:8025/", "MEDIA_RETENTION_DAYS": 365},
    {"MEDIA_BASE_URL": "http://[::1]:8025"},
    {"MEDIA_DOWNLOAD": True, "ACCOUNT_SID": "",
     "API_KEY_SID": "SK" + "1" * 32, "API_KEY_SECRET": "secret"},
    {"MEDIA_DOWNLOAD": False, "ACCOUNT_SID": ""},
])
def test_sound_media_settings_are_quiet(shared_cache, changes):
    assert ids(**changes) == set()


def test_a_media_storage_of_the_sites_storages_is_accepted(shared_cache, settings):
    settings.STORAGES = {**settings.STORAGES,
                         "evidence": {"BACKEND": "django.core.files.storage.InMemoryStorage"}}
    assert ids(MEDIA_STORAGE="evidence") == set()


@pytest.mark.parametrize("fields", [["guest__nickname"], ["guest"], "guest__full_name", [""], [3]])
def test_booking_search_fields_that_do_not_resolve_are_E025(shared_cache, fields):
    assert ids(BOOKING_SEARCH_FIELDS=fields) == {"twilio_convlink.E025"}


def test_booking_search_fields_of_text_fields_are_quiet(shared_cache):
    assert ids(BOOKING_SEARCH_FIELDS=["guest__full_name", "unit__title"]) == set()



@pytest.mark.parametrize(("changes", "missing"), [
    ({"API_KEY_SID": "SK" + "1" * 32, "API_KEY_SECRET": ""}, "API_KEY_SID is set without API_KEY_SECRET"),
    ({"ACCOUNT_SID": ""}, "neither ACCOUNT_SID and AUTH_TOKEN nor an API key are set"),
])
def test_w012_says_which_credentials_are_missing(shared_cache, settings, changes, missing):
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "MEDIA_DOWNLOAD": True, **changes}
    [warning] = [m for m in check_settings(deploy=True) if m.id == "twilio_convlink.W012"]
    assert missing in warning.msg


@pytest.mark.parametrize(("backend", "on_check"), [
    (SDK, True),  # the site calls Twilio: its files will come, and fail
    ("django_twilio_convlink.api.ConsoleBackend", False),  # development without an account
    ("django_twilio_convlink.api.LocmemBackend", False),  # tests
])
def test_w012_waits_for_deploy_on_a_site_that_does_not_call_twilio(shared_cache, settings, backend, on_check):
    site = {"API_BACKEND": backend, "MEDIA_DOWNLOAD": True, "ACCOUNT_SID": "", "GROUP_CHAT": False}
    assert ("twilio_convlink.W012" in ids(**site)) is on_check
    # Once at check --deploy either way: it runs the plain checks too.
    from django.test import override_settings

    with override_settings(TWILIO_CONVLINK={**settings.TWILIO_CONVLINK, **site}):
        found = [m.id for m in check_settings(deploy=True) if m.id == "twilio_convlink.W012"]
    assert found == ["twilio_convlink.W012"]


HEX_TOKEN = "0123456789abcdef0123456789ABCDEF"


@pytest.mark.parametrize(("changes", "w014"), [
    ({"AUTH_TOKEN": HEX_TOKEN}, False),
    ({"AUTH_TOKEN": [HEX_TOKEN, HEX_TOKEN.lower()]}, False),  # a list, as the signature check takes
    ({"AUTH_TOKEN": "local-placeholder-token"}, True),
    ({"AUTH_TOKEN": HEX_TOKEN, "SECONDARY_AUTH_TOKENS": ["placeholder"]}, True),
    ({"AUTH_TOKEN": HEX_TOKEN, "SUBACCOUNT_AUTH_TOKENS": {"AC" + "1" * 32: "placeholder"}}, True),
    # Nothing is validated at all: W001 says so, a word about the token would mislead.
    ({"AUTH_TOKEN": "placeholder", "VALIDATE_SIGNATURE": False}, False),
])
def test_w014_names_a_signing_token_that_is_no_twilio_token(changes, w014):
    assert ("twilio_convlink.W014" in ids(deploy=True, **changes)) is w014
    assert "twilio_convlink.W014" not in ids(**changes)  # a deployment check only


class SitesOwnBackend(BaseApiBackend):
    """A site's own backend, which calls Twilio its own way."""


@pytest.mark.parametrize(("backend", "w013"), [
    ("django_twilio_convlink.api.SdkBackend", False),
    (f"{__name__}.SitesOwnBackend", False),
    ("django_twilio_convlink.api.ConsoleBackend", True),
    ("django_twilio_convlink.api.LocmemBackend", True),
])
def test_w013_names_a_backend_that_does_not_call_twilio(backend, w013):
    assert ("twilio_convlink.W013" in ids(deploy=True, API_BACKEND=backend)) is w013
