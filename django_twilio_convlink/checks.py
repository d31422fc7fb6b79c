"""System checks: every settings mistake named at ``manage.py check`` with its fix.

IDs are stable (twilio_convlink.E001...) so a site can silence one deliberately, and
each names one problem: silencing one must not silence another mistake with it.
No check touches the database: a fresh ``migrate`` must never trip over them.

Advice that only matters in production (a worker for the Twilio calls, W007; a cache
every process shares, W008; the media service's credentials on a site that does not
talk to Twilio yet, W012; an API backend that does not call Twilio, W013; a token that
is no Twilio auth token, W014) is a deployment check, shown by ``manage.py check
--deploy`` as Django's own production advice is: a fresh site that followed the
Quickstart must get no warning on ``check``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from django.apps import apps
from django.conf import settings
from django.core import checks
from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured
from django.db import models

from .accounts import subaccount_tokens
from .api import calls_twilio
from .conf import DEFAULTS, SETTINGS_NAME, TWILIO_OPT_IN_KEYWORDS, TWILIO_OPT_OUT_KEYWORDS, convlink_settings
from .events import ACCOUNT_SID
from .phones import normalize_phone

SETTINGS_HINT = f"Set it in settings.{SETTINGS_NAME}; see the settings reference in the documentation."


def _error(msg: str, hint: str, id: int) -> checks.Error:
    return checks.Error(msg, hint=hint, id=f"twilio_convlink.E{id:03d}")


# `manage.py check --tag twilio_convlink` runs only this app's checks; each check also
# carries the Django tag of what it is about (models, security, caches).
TAG = "twilio_convlink"


Check = Callable[..., list[checks.CheckMessage]]


def _registered(*tags: str, deploy: bool = False) -> Callable[[Callable[[list, list], None]], Check]:
    """Register ``func(errors, warnings)`` as a system check tagged ``TAG`` and ``tags``
    (a deployment check with ``deploy``: run by ``check --deploy`` only).
    It is skipped when TWILIO_CONVLINK itself cannot be read: ``check_settings_keys``
    reports that once (E018) instead of every check failing with it."""

    def register(func: Callable[[list, list], None]) -> Check:
        def check(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
            try:
                convlink_settings.unknown_keys()
            except ImproperlyConfigured:
                return []
            errors: list[checks.CheckMessage] = []
            warnings: list[checks.CheckMessage] = []
            func(errors, warnings)
            return errors + warnings

        # Named as the function (not functools.wraps: Django's registry reads the
        # signature, which must take **kwargs, and wraps would show it func's).
        check.__name__ = check.__qualname__ = func.__name__
        check.__doc__ = func.__doc__
        return checks.register(check, TAG, *tags, deploy=deploy)

    return register


def _model(key: str, errors: list, abstract_base: type | None = None) -> type[models.Model] | None:
    label = convlink_settings.get(key)
    if not label:
        errors.append(_error(f'{SETTINGS_NAME}["{key}"] is not set.', SETTINGS_HINT, 1))
        return None
    try:
        model = apps.get_model(label)
    except (ValueError, LookupError):
        errors.append(_error(
            f'{SETTINGS_NAME}["{key}"] = {label!r} is not an installed model.',
            'Use "app_label.ModelName" of a model in INSTALLED_APPS.', 2))
        return None
    if abstract_base and not issubclass(model, abstract_base):
        errors.append(_error(
            f'{SETTINGS_NAME}["{key}"] = {label!r} does not subclass {abstract_base.__name__}.',
            f"Declare it as class {model.__name__}({abstract_base.__name__}).", 3))
        return None
    return model


def _value_field_problem(booking: type[models.Model], path: str, if_relation: str) -> str:
    """Why the ORM ``path`` from a booking does not end at a field holding a value ("" when
    it does); ``if_relation`` says what is wrong with ending at a relation."""
    from .linking.bookings import resolve_path

    try:
        _, field = resolve_path(booking, path)
    except (FieldDoesNotExist, ImproperlyConfigured) as exc:
        return str(exc)
    return f"{field.name!r} is {if_relation}" if field.is_relation else ""


def _check_booking_fields(booking: type[models.Model], apartment: type[models.Model] | None,
                          errors: list) -> None:

    phone_path = convlink_settings.get("BOOKING_PHONE_FIELD")
    if not phone_path:
        errors.append(_error(f'{SETTINGS_NAME}["BOOKING_PHONE_FIELD"] is not set.', SETTINGS_HINT, 1))
    else:
        problem = _value_field_problem(booking, phone_path, "a relation, not a phone field.")
        if problem:
            errors.append(_error(
                f'{SETTINGS_NAME}["BOOKING_PHONE_FIELD"] = {phone_path!r} does not resolve '
                f"from {booking._meta.label}: {problem}",
                'Give the ORM path from a booking to the phone, e.g. "tenant__phone".', 4))

    apartment_name = convlink_settings.get("BOOKING_APARTMENT_FIELD")
    if not apartment_name:
        errors.append(_error(f'{SETTINGS_NAME}["BOOKING_APARTMENT_FIELD"] is not set.', SETTINGS_HINT, 1))
    else:
        try:
            apartment_field = booking._meta.get_field(apartment_name)
            # A relation to no model in particular (a GenericForeignKey) is no foreign key either.
            related = apartment_field.related_model
            if (not apartment_field.many_to_one and not apartment_field.one_to_one) or related is None:
                raise FieldDoesNotExist(f"{apartment_name!r} is not a foreign key")
            if apartment is not None and related is not apartment:
                raise FieldDoesNotExist(f"it points to {related._meta.label}, not {apartment._meta.label}")
        except FieldDoesNotExist as exc:
            errors.append(_error(
                f'{SETTINGS_NAME}["BOOKING_APARTMENT_FIELD"] = {apartment_name!r} is not a '
                f"foreign key from {booking._meta.label} to APARTMENT_MODEL: {exc}",
                "Name the booking's foreign key to the apartment model.", 5))

    start, end = convlink_settings.get("BOOKING_START_FIELD"), convlink_settings.get("BOOKING_END_FIELD")
    if bool(start) != bool(end):
        errors.append(_error(
            "BOOKING_START_FIELD and BOOKING_END_FIELD must be set together.",
            "Set both to enable the date window, or neither to pick the newest booking.", 6))
    for key, name in (("BOOKING_START_FIELD", start), ("BOOKING_END_FIELD", end)):
        if not name:
            continue
        try:
            date_field = booking._meta.get_field(name)
        except FieldDoesNotExist:
            date_field = None
        if not isinstance(date_field, models.DateField):  # DateTimeField subclasses DateField
            errors.append(_error(
                f'{SETTINGS_NAME}["{key}"] = {name!r} is not a date field of {booking._meta.label}.',
                "Name a DateField or DateTimeField of the booking model.", 14))
    search = convlink_settings.get("BOOKING_SEARCH_FIELDS")
    # A bare string would be searched letter by letter.
    paths = search if isinstance(search, list | tuple) else [search]
    for path in paths:
        if not isinstance(path, str) or not path or not isinstance(search, list | tuple):
            problem = "not a list of ORM paths"
        else:
            problem = _value_field_problem(booking, path, "a relation; name a text field behind it")
        if problem:
            errors.append(_error(
                f'{SETTINGS_NAME}["BOOKING_SEARCH_FIELDS"] holds {path!r}, which does not resolve to a '
                f"field of {booking._meta.label}: {problem}",
                'List ORM paths from a booking to text fields, e.g. ["guest__full_name", '
                '"unit__title"].', 25))
    window = convlink_settings.get("BOOKING_WINDOW_DAYS")
    if not isinstance(window, int) or window < 0:
        errors.append(_error(f'{SETTINGS_NAME}["BOOKING_WINDOW_DAYS"] must be a non-negative integer.',
                             "The default is 90.", 15))


@_registered()
def check_phones(errors: list, warnings: list) -> None:
    """The system phones and identities, and the region (E008, E009, E016, E017, W002)."""
    import phonenumbers

    region = convlink_settings.get("PHONE_REGION")
    if region not in phonenumbers.SUPPORTED_REGIONS:
        errors.append(_error(f'{SETTINGS_NAME}["PHONE_REGION"] = {region!r} is not a region code.',
                             'Use an ISO 3166-1 alpha-2 code such as "US".', 9))
        return
    for key in ("TWILIO_PHONE", "MANAGER_PHONE"):
        value = convlink_settings.get(key)
        if not value:
            warnings.append(checks.Warning(
                f'{SETTINGS_NAME}["{key}"] is not set: messages from it would count as inbound.',
                hint=SETTINGS_HINT, id="twilio_convlink.W002"))
        elif normalize_phone(value) is None:
            errors.append(_error(f'{SETTINGS_NAME}["{key}"] = {value!r} is not a phone number.',
                                 'Write it in E.164, e.g. "+15612205252".', 8))
    identities = convlink_settings.get("SYSTEM_IDENTITIES", [])
    if isinstance(identities, str) or not isinstance(identities, list | tuple | set | frozenset):
        errors.append(_error(f'{SETTINGS_NAME}["SYSTEM_IDENTITIES"] must be a list.',
                             'For example ["+15551230000", "night-manager"].', 16))
        return
    for value in identities:
        text = str(value).strip()
        # A value that starts like a phone number must parse as one; otherwise it is
        # taken as a chat identity and the phone it was meant to be never matches.
        if text[:1] in "+(0123456789" and text and normalize_phone(text) is None:
            errors.append(_error(
                f'{SETTINGS_NAME}["SYSTEM_IDENTITIES"] holds {value!r}, which looks like a '
                "phone number but does not parse.", 'Write it in E.164, e.g. "+15612205252".', 17))


@_registered()
def check_group_chat(errors: list, warnings: list) -> None:
    """The API backend, the tasks framework and backend, the credentials (E010-E013,
    W004-W006)."""
    from django.utils.module_loading import import_string

    path = convlink_settings.get("API_BACKEND")
    try:
        import_string(path)
    except ImportError as exc:
        errors.append(_error(f'{SETTINGS_NAME}["API_BACKEND"] = {path!r} cannot be imported: {exc}',
                             'Use "django_twilio_convlink.api.SdkBackend", ".ConsoleBackend" or '
                             '".LocmemBackend".', 11))
    if not convlink_settings.get("GROUP_CHAT"):
        return
    from . import tasks

    if not tasks.TASKS_AVAILABLE:
        expected = tasks.task_settings_in_use()
        if expected:
            errors.append(_error(
                "This Django has no tasks framework, and these settings expect a task backend: "
                f"{', '.join(expected)}. The group chat forwards would run in the webhook's process.",
                'On Django 5.2 install the backport: pip install "django-twilio-convlink[tasks]" '
                "(django-tasks); Django 6.0+ has django.tasks built in. Or remove those settings.", 10))
        # Else the default install on Django 5.2: it works (tasks.enqueue runs the forward
        # here, after the commit); check_worker (W007) advises a worker at check --deploy.
    else:
        alias = convlink_settings.get("TASK_BACKEND")
        queue = convlink_settings.get("TASK_QUEUE")
        if alias not in tasks.task_backends.settings:
            errors.append(_error(f'{SETTINGS_NAME}["TASK_BACKEND"] = {alias!r} is not in settings.TASKS.',
                                 "Name one of the aliases of settings.TASKS.", 12))
        else:
            backend_path = tasks.task_backends.settings[alias].get("BACKEND", "")
            # Only a queue whose tasks are rows of this database commits them with the
            # message; any other backend would run (or hand out) the task before that.
            in_database = backend_path.endswith(".DatabaseBackend")
            if convlink_settings.get("ENQUEUE_IN_TRANSACTION") and not in_database:
                warnings.append(checks.Warning(
                    f'ENQUEUE_IN_TRANSACTION with the task backend "{alias}" ({backend_path}), '
                    "which does not store tasks in this database: the task may run before the "
                    "message is committed (and the immediate backend would make the group chat's "
                    "Twilio calls inside the webhook's transaction).",
                    hint="Use it with django-tasks-db (django_tasks_db.DatabaseBackend) on the same "
                         "database, or set ENQUEUE_IN_TRANSACTION to False.",
                    id="twilio_convlink.W006"))
            queues = tasks.task_backends.settings[alias].get("QUEUES")
            if queues and queue not in queues:
                errors.append(_error(
                    f'{SETTINGS_NAME}["TASK_QUEUE"] = {queue!r} is not among the QUEUES of the '
                    f'"{alias}" task backend: every enqueue would fail.',
                    f"Use one of {sorted(queues)} or add it to settings.TASKS[{alias!r}]['QUEUES'].", 13))
    if calls_twilio():
        has_key = convlink_settings.get("API_KEY_SID") and convlink_settings.get("API_KEY_SECRET")
        if not convlink_settings.get("ACCOUNT_SID") or not (has_key or convlink_settings.get("AUTH_TOKEN")):
            warnings.append(checks.Warning(
                "GROUP_CHAT is on with the Twilio SDK backend but without credentials: every group "
                "chat will fail.",
                hint="Set ACCOUNT_SID and AUTH_TOKEN (or API_KEY_SID and API_KEY_SECRET), or use "
                     '"django_twilio_convlink.api.ConsoleBackend" in development.',
                id="twilio_convlink.W004"))
    for key in ("TWILIO_PHONE", "MANAGER_PHONE"):
        phone = normalize_phone(convlink_settings.get(key))
        if phone and not phone.startswith("+1"):
            warnings.append(checks.Warning(
                f'{SETTINGS_NAME}["{key}"] is {phone}: group MMS serves +1 numbers only.',
                hint="Use a US or Canadian number, or set GROUP_CHAT to False.",
                id="twilio_convlink.W005"))


@_registered(deploy=True)
def check_worker(errors: list, warnings: list) -> None:
    """A worker makes the Twilio calls (W007, a deployment check): without one they run
    in the webhook's process. That works, and on a laptop it is what one wants."""
    work = [what for key, what in (("GROUP_CHAT", "the group chat forwards"),
                                   ("MEDIA_DOWNLOAD", "the downloads of customers' files"))
            if convlink_settings.get(key)]
    if not work:
        return
    from . import tasks

    if not tasks.TASKS_AVAILABLE:
        if tasks.task_settings_in_use():
            return  # E010: the settings expect a backend that is not there
        runner = "No tasks framework"
        hint = ('For a worker, pip install "django-twilio-convlink[tasks]" (the django-tasks backport; '
                "Django 6.0+ has django.tasks built in) and set settings.TASKS to a backend with a worker")
    else:
        alias = convlink_settings.get("TASK_BACKEND")
        backend_path = tasks.task_backends.settings.get(alias, {}).get("BACKEND", "")
        # Django's default TASKS (and the backport's) is the immediate backend.
        if not backend_path.endswith(".ImmediateBackend"):
            return
        runner = f'The task backend "{alias}" is the immediate one ({backend_path})'
        hint = (f"Set settings.TASKS[{alias!r}] to a backend with a worker (django-tasks-db's "
                'DatabaseBackend, or RQ: pip install "django-twilio-convlink[rq]") and run the worker')
    warnings.append(checks.Warning(
        f"{runner}: {' and '.join(work)} run in the webhook's process, right after its commit, so "
        "Twilio's answers count against the webhook's 5 seconds.",
        hint=f"{hint}; keep retry_group_chats and fetch_twilio_media in cron either way. See "
             '"Running the work on a worker" in the documentation.',
        id="twilio_convlink.W007"))


# With every tag the others carry: a TWILIO_CONVLINK that cannot be read skips them,
# so `check --tag security` must still say so.
@checks.register(TAG, checks.Tags.models, checks.Tags.security, checks.Tags.caches)
def check_settings_keys(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """TWILIO_CONVLINK is a dict (E018) of known keys (W003)."""
    try:
        unknown = convlink_settings.unknown_keys()
    except ImproperlyConfigured as exc:
        return [_error(str(exc), SETTINGS_HINT, 18)]
    return [checks.Warning(f'{SETTINGS_NAME} has an unknown key "{key}".',
                           hint=f"Known keys: {', '.join(sorted(DEFAULTS))}.", id="twilio_convlink.W003")
            for key in unknown]


@_registered(checks.Tags.models)
def check_models(errors: list, warnings: list) -> None:
    """The models the settings name, and the booking fields (E001-E006, E014, E015)."""
    from .models import AbstractTwilioConversation, AbstractTwilioMessage

    _model("CONVERSATION_MODEL", errors, AbstractTwilioConversation)
    _model("MESSAGE_MODEL", errors, AbstractTwilioMessage)
    booking = _model("BOOKING_MODEL", errors)
    apartment = _model("APARTMENT_MODEL", errors)
    if booking is not None:
        _check_booking_fields(booking, apartment, errors)


@_registered(checks.Tags.security)
def check_signature(errors: list, warnings: list) -> None:
    """Something to validate signatures with (E007), or validation off on purpose (W001);
    sub-accounts named by their account SID (E019)."""
    subaccounts = convlink_settings.get("SUBACCOUNT_AUTH_TOKENS") or {}
    malformed = (["(not a dict)"] if not isinstance(subaccounts, dict) else
                 [repr(key) for key in subaccounts
                  if not (isinstance(key, str) and ACCOUNT_SID.fullmatch(key))])
    if malformed:
        # Such a key matches no delivery: the sub-account's webhooks would all get 403,
        # or (a key that is some other account's alias) be taken for the main account's.
        errors.append(_error(
            f'{SETTINGS_NAME}["SUBACCOUNT_AUTH_TOKENS"] must map account SIDs ("AC" and 32 hex '
            f"digits) to tokens; not an account SID: {', '.join(malformed)}.",
            "Use the sub-account's SID from the Twilio console as the key.", 19))
    if convlink_settings.get("VALIDATE_SIGNATURE", True):
        if not _signing_secrets():
            errors.append(_error(
                f'{SETTINGS_NAME}["VALIDATE_SIGNATURE"] is on with nothing to validate a signature '
                "with (AUTH_TOKEN, SECONDARY_AUTH_TOKENS, SUBACCOUNT_AUTH_TOKENS, or WEBHOOK_SHARED_KEYS "
                "with twilio 9.13+): every webhook would be rejected with 403.",
                "Set AUTH_TOKEN to the Twilio auth token (from the environment, never in code).", 7))
    else:
        warnings.append(checks.Warning(
            "Twilio signature validation is off: anyone can post fake messages.",
            hint='Remove VALIDATE_SIGNATURE=False outside local experiments.',
            id="twilio_convlink.W001"))


def _signing_secrets() -> list[str]:
    """The settings holding a secret the signature check can validate with
    (``signature.signature_failure``): the account's token(s), a sub-account's, a
    webhook shared key (twilio 9.13+ only)."""
    from .signature import get_signature_algorithm

    keys = ["AUTH_TOKEN", "SECONDARY_AUTH_TOKENS", "SUBACCOUNT_AUTH_TOKENS"]
    if get_signature_algorithm is not None:
        keys.append("WEBHOOK_SHARED_KEYS")
    return [key for key in keys if convlink_settings.get(key)]


def _keywords(key: str, errors: list) -> dict[str, str] | None:
    """The words of the keyword setting ``key`` by their matching form (trimmed,
    case-folded, as ``optouts`` compares them), or None after reporting E020."""
    value = convlink_settings.get(key)
    # Not any iterable: a string "STOP" would be read letter by letter, and a
    # customer's "t" would opt them out. A blank word would match a blank message.
    if not isinstance(value, list | tuple | set | frozenset):
        bad = f"not {value!r}"
    else:
        wrong = [repr(word) for word in value if not isinstance(word, str) or not word.strip()]
        if not wrong:
            return {word.strip().casefold(): word.strip() for word in value}
        bad = f"it holds {', '.join(wrong)}"
    errors.append(_error(
        f'{SETTINGS_NAME}["{key}"] must be a list of non-empty strings; {bad}.',
        'Write a list of words, e.g. ["STOP", "ARRET"]; [] for none.', 20))
    return None


def _left_out(twilio_words: tuple[str, ...], site_words: dict[str, str]) -> list[str]:
    return [word for word in twilio_words if word.casefold() not in site_words]


@_registered()
def check_opt_out_keywords(errors: list, warnings: list) -> None:
    """The opt-out and opt-in keywords: lists of words (E020) that keep Twilio's own
    (W009, W011), no word in both (W010)."""
    opt_out = _keywords("OPT_OUT_KEYWORDS", errors)
    opt_in = _keywords("OPT_IN_KEYWORDS", errors)
    # Twilio's Advanced Opt-Out acts on its words whatever this setting says: a site
    # list replaces the default, so a site adding "ARRET" can lose "STOP" with it.
    if opt_out is not None and (missing := _left_out(TWILIO_OPT_OUT_KEYWORDS, opt_out)):
        warnings.append(checks.Warning(
            f'{SETTINGS_NAME}["OPT_OUT_KEYWORDS"] leaves out {", ".join(missing)}, which Twilio '
            "acts on anyway: a customer who texts one is blocked by Twilio (every send refused "
            "with error 21610), but the app still counts them opted in, so it keeps trying to send "
            "to them and failing (in a group chat for good: a refusal there names no phone).",
            hint="Add them to OPT_OUT_KEYWORDS (a list of your own replaces Twilio's: start it from "
                 "django_twilio_convlink.conf.TWILIO_OPT_OUT_KEYWORDS), or silence "
                 "twilio_convlink.W009 if your number does not use Twilio's opt-out handling.",
            id="twilio_convlink.W009"))
    if opt_out is not None and opt_in is not None and (both := [opt_in[w] for w in opt_in if w in opt_out]):
        warnings.append(checks.Warning(
            f'{SETTINGS_NAME}["OPT_OUT_KEYWORDS"] and ["OPT_IN_KEYWORDS"] both hold '
            f"{', '.join(both)}: the app takes a message of any of them as an opt-out.",
            hint="Remove each from the list it does not belong to.", id="twilio_convlink.W010"))
    # The other way round is quieter and worse: nothing fails, the app just goes on
    # skipping every forward to a customer Twilio lets texts reach again.
    if opt_in is not None and (missing := _left_out(TWILIO_OPT_IN_KEYWORDS, opt_in)):
        warnings.append(checks.Warning(
            f'{SETTINGS_NAME}["OPT_IN_KEYWORDS"] leaves out {", ".join(missing)}, which Twilio '
            "acts on anyway: a customer who texts one can receive texts again, but the app still "
            "counts them opted out and skips every send to them until a person opts them back in.",
            hint="Add them to OPT_IN_KEYWORDS (a list of your own replaces Twilio's: start it from "
                 "django_twilio_convlink.conf.TWILIO_OPT_IN_KEYWORDS), or silence "
                 "twilio_convlink.W011 if your number does not use Twilio's opt-out handling.",
            id="twilio_convlink.W011"))


def forged_counter_cache() -> tuple[str, str, str]:
    """(alias, backend path, why its count cannot be trusted, or "") of the cache
    ``signature.count_forged`` counts rejected (forged or unsigned) requests in: the
    default one."""
    from django.core.cache import DEFAULT_CACHE_ALIAS
    from django.core.cache.backends.dummy import DummyCache
    from django.core.cache.backends.locmem import LocMemCache
    from django.utils.module_loading import import_string

    path = settings.CACHES.get(DEFAULT_CACHE_ALIAS, {}).get("BACKEND", "")
    try:
        backend = import_string(path)
    except ImportError:
        return DEFAULT_CACHE_ALIAS, path, ""  # Django reports it the first time the cache is used
    if isinstance(backend, type) and issubclass(backend, DummyCache):
        return DEFAULT_CACHE_ALIAS, path, "the dummy cache stores nothing: the count is always 0"
    if isinstance(backend, type) and issubclass(backend, LocMemCache):
        # Rejections happen in the web server's processes, check_twilio_status in another.
        return DEFAULT_CACHE_ALIAS, path, (
            "the local-memory cache is per process: each web server process counts its own "
            "rejections, and check_twilio_status sees none of them")
    return DEFAULT_CACHE_ALIAS, path, ""


@_registered(checks.Tags.caches, deploy=True)
def check_forged_counter(errors: list, warnings: list) -> None:
    """The cache the rejected-request counter lives in is shared by every process (W008,
    a deployment check: a development server is one process)."""
    alias, path, problem = forged_counter_cache()
    if problem:
        warnings.append(checks.Warning(
            f'The count of rejected (forged or unsigned) webhook requests is kept in the "{alias}" '
            f"cache, {path}, and {problem}.",
            hint="Make CACHES['default'] a cache every process shares (Redis, Memcached, the "
                 "database) to count them, or silence twilio_convlink.W008.",
            id="twilio_convlink.W008"))


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _scheme_and_host(url: Any) -> bool:
    """``url`` is ``http(s)://host[:port]`` and nothing more: media.fetch appends
    ``/v1/Services/...`` to it, so a "?" or "#" (even empty) would turn that path into
    a query or a fragment, and the credentials would go to the host's root."""
    if not isinstance(url, str) or any(c.isspace() or not c.isprintable() or c in "?#@" for c in url):
        return False
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port out of range or not a number
    except ValueError:  # "http://[::1": an unclosed IPv6 address
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and not parts.path.strip("/")


@_registered()
def check_media(errors: list, warnings: list) -> None:
    """Customers' files: the storage alias (E021), the media service URL (E022), the
    numbers (E023), the retention (E024), the credentials on a site whose API backend
    calls Twilio (W012; ``check_media_credentials`` for the others)."""
    alias = convlink_settings.get("MEDIA_STORAGE")
    storages = getattr(settings, "STORAGES", {}) or {}
    # isinstance first: a list or dict given by mistake cannot be looked up (TypeError).
    if not isinstance(alias, str) or alias not in storages:
        errors.append(_error(
            f'{SETTINGS_NAME}["MEDIA_STORAGE"] = {alias!r} is not an alias of settings.STORAGES: no '
            "customer file could be saved.",
            f"Name one of {sorted(storages)} (\"default\" is Django's default storage), or add it to "
            "settings.STORAGES.", 21))
    url = convlink_settings.get("MEDIA_BASE_URL")
    if not _scheme_and_host(url):
        errors.append(_error(
            f'{SETTINGS_NAME}["MEDIA_BASE_URL"] = {url!r} is not a scheme and host: downloads send '
            "the credentials there.",
            'Use "https://mcs.us1.twilio.com" (the default), or a stand-in server\'s "http://host:port" '
            "in tests.", 22))
    for key in ("MEDIA_MAX_BYTES", "MEDIA_MAX_ATTEMPTS", "MEDIA_RETRY_DELAY"):
        if not _positive_int(convlink_settings.get(key)):
            errors.append(_error(f'{SETTINGS_NAME}["{key}"] must be a whole number above 0; '
                                 f"not {convlink_settings.get(key)!r}.", SETTINGS_HINT, 23))
    days = convlink_settings.get("MEDIA_RETENTION_DAYS")
    if days is not None and not _positive_int(days):
        errors.append(_error(
            f'{SETTINGS_NAME}["MEDIA_RETENTION_DAYS"] must be None (keep files as long as the site does) '
            f"or a number of days above 0; not {days!r}.", SETTINGS_HINT, 24))
    if calls_twilio():
        warnings.extend(_media_credentials())


@_registered(deploy=True)
def check_media_credentials(errors: list, warnings: list) -> None:
    """W012 at ``check --deploy`` on a site whose API backend does not call Twilio (the
    console or locmem backend of development and tests), which ``check_media`` leaves
    quiet: files come only from a real account, but a deployed site must have the
    credentials to fetch them."""
    if not calls_twilio():
        warnings.extend(_media_credentials())


@_registered(checks.Tags.security, deploy=True)
def check_live_twilio(errors: list, warnings: list) -> None:
    """What a local site rightly does and a deployed one must not: an API backend that
    does not call Twilio (W013), an AUTH_TOKEN that is no Twilio auth token, such as
    the Quickstart's local placeholder (W014)."""
    from django.utils.module_loading import import_string

    path = convlink_settings.get("API_BACKEND", "")
    try:
        import_string(path)
    except ImportError:
        pass  # E011 says so
    else:
        if not calls_twilio():
            warnings.append(checks.Warning(
                f"API_BACKEND is {path}, which does not call Twilio: group chats, replies and "
                "history never reach it.",
                hint="Remove API_BACKEND (the default calls Twilio through its SDK) where the site "
                     "is deployed; the console backend is for a laptop without an account.",
                id="twilio_convlink.W013"))
    if not convlink_settings.get("VALIDATE_SIGNATURE", True):
        return  # W001 says what matters then: nothing is validated at all
    wrong = [key for key, tokens in _signing_tokens() if any(not _looks_like_auth_token(t) for t in tokens)]
    if wrong:
        warnings.append(checks.Warning(
            f"{' and '.join(wrong)} holds a value that is no Twilio auth token (32 hexadecimal "
            "characters): no request Twilio signs with it, and anyone who knows the value can sign one.",
            hint="Set the account's Auth Token from the Twilio Console, from the environment; a "
                 "placeholder is for a laptop only.",
            id="twilio_convlink.W014"))


def _signing_tokens() -> list[tuple[str, list[Any]]]:
    """The tokens each setting holds that signatures are checked with (a string or a list)."""
    def listed(value: Any) -> list[Any]:
        if isinstance(value, str):
            return [value] if value else []
        return [v for v in value if v] if isinstance(value, list | tuple) else []

    return [(key, tokens) for key, tokens in (
        ("AUTH_TOKEN", listed(convlink_settings.get("AUTH_TOKEN"))),
        ("SECONDARY_AUTH_TOKENS", listed(convlink_settings.get("SECONDARY_AUTH_TOKENS"))),
        # As the signature check reads them (keys that are no account SID are E019's).
        ("SUBACCOUNT_AUTH_TOKENS", [t for tokens in subaccount_tokens().values() for t in tokens]),
    ) if tokens]


def _looks_like_auth_token(token: Any) -> bool:
    return isinstance(token, str) and len(token) == 32 and all(c in "0123456789abcdefABCDEF" for c in token)


def _media_credentials() -> list[checks.CheckMessage]:
    """W012 when MEDIA_DOWNLOAD is on without credentials for the media service."""
    if not convlink_settings.get("MEDIA_DOWNLOAD"):
        return []
    # As media.fetch.credentials_for chooses: an API_KEY_SID wins over the auth
    # token, so one set without its secret fails every download, token or not.
    if convlink_settings.get("API_KEY_SID"):
        missing = ("" if convlink_settings.get("API_KEY_SECRET")
                   else "API_KEY_SID is set without API_KEY_SECRET")
    else:
        missing = ("" if convlink_settings.get("ACCOUNT_SID") and convlink_settings.get("AUTH_TOKEN")
                   else "neither ACCOUNT_SID and AUTH_TOKEN nor an API key are set")
    if not missing:
        return []
    return [checks.Warning(
        f"MEDIA_DOWNLOAD is on without credentials for Twilio's media service ({missing}): "
        "every customer file will fail to download, and stays only at Twilio.",
        hint="Set ACCOUNT_SID and AUTH_TOKEN (or API_KEY_SID and API_KEY_SECRET), or set "
             "MEDIA_DOWNLOAD to False.",
        id="twilio_convlink.W012")]
