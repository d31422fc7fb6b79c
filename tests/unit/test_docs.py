"""The documentation against the code: every setting and every check ID documented,
nothing documented that does not exist, and README.rst a front page."""

import ast
import re
from pathlib import Path

from django_twilio_convlink.conf import DEFAULTS, REQUIRED

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def documented_settings() -> dict[str, str]:
    """Each ``.. describe:: KEY`` of docs/settings.rst with the text of its ``:Default:``."""
    text = (DOCS / "settings.rst").read_text()
    return dict(re.findall(r"^\.\. describe:: (\w+)\n\n   :Default: (.+)$", text, re.MULTILINE))


def test_every_setting_is_documented_and_nothing_else():
    assert set(documented_settings()) == set(DEFAULTS)


def test_each_documented_default_is_the_default():
    for key, default in documented_settings().items():
        expected = "required" if key in REQUIRED else f"``{DEFAULTS[key]!r}``"
        assert default == expected, key


def check_ids() -> set[str]:
    """Every ID checks.py can report: ``id="twilio_convlink.X000"`` and ``_error(..., n)``."""
    tree = ast.parse((ROOT / "django_twilio_convlink" / "checks.py").read_text())
    ids = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        for keyword in node.keywords:
            if keyword.arg == "id" and isinstance(keyword.value, ast.Constant):
                ids.add(keyword.value.value)
        if getattr(node.func, "id", None) == "_error" and isinstance(node.args[-1], ast.Constant):
            ids.add(f"twilio_convlink.E{node.args[-1].value:03d}")
    return ids


def test_every_check_id_is_documented_and_nothing_else():
    documented = set(re.findall(r"^\.\. describe:: (twilio_convlink\.[EW]\d{3})$",
                                (DOCS / "checks.rst").read_text(), re.MULTILINE))
    assert len(check_ids()) > 30  # the parse found them
    assert documented == check_ids()


NEWCOMER_COMMANDS = [
    "python3 -m venv .venv && .venv/bin/pip install -e . -r example_project/requirements.txt"
    " && .venv/bin/python example_project/manage.py rundemo",
    "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && npm ci --no-audit --no-fund"
    " && .venv/bin/pytest",
]


def test_the_readme_is_a_front_page():
    text = (ROOT / "README.rst").read_text()
    assert len(text.splitlines()) <= 250
    assert "https://django-twilio-convlink.readthedocs.io/" in text
    # The two commands a newcomer copies come first: the example site, then the tests.
    before_sections = text[:text.index("\nWhat it does\n")]
    blocks = [line.strip() for line in before_sections.splitlines() if line.startswith("    python3")]
    assert blocks == NEWCOMER_COMMANDS


def test_the_readmes_settings_are_the_quickstarts():
    # README cannot include a file on PyPI, so it repeats the one the Quickstart
    # includes and tests/webhook/test_fresh_site.py installs.
    snippet = (DOCS / "snippets" / "settings.py").read_text()
    indented = "\n".join(("       " + line) if line else "" for line in snippet.splitlines())
    assert indented in (ROOT / "README.rst").read_text()


def test_the_deployment_checks_are_the_ones_check_deploy_adds(settings):
    from django.core.checks import run_checks

    # A laptop's settings, where every deployment check has something to say.
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "AUTH_TOKEN": "placeholder", "ACCOUNT_SID": "",
                                "API_BACKEND": "django_twilio_convlink.api.ConsoleBackend",
                                "TASK_BACKEND": "default", "MEDIA_DOWNLOAD": True}
    plain = {m.id for m in run_checks(tags=["twilio_convlink"])}
    deploy = {m.id for m in run_checks(tags=["twilio_convlink"], include_deployment_checks=True)}
    text = (DOCS / "checks.rst").read_text()
    section = text[text.index("\nDeployment checks\n"):]
    documented = set(re.findall(r"^\.\. describe:: (twilio_convlink\.[EW]\d{3})$", section, re.MULTILINE))
    assert deploy - plain == documented


def test_every_management_command_has_its_section():
    folder = ROOT / "django_twilio_convlink" / "management" / "commands"
    commands = {path.stem for path in folder.glob("*.py") if not path.stem.startswith("_")}
    text = (DOCS / "commands.rst").read_text()
    documented = set(re.findall(r"^\.\. django-command:: (\w+)$", text, re.MULTILINE))
    assert commands <= documented, "add a .. django-command:: section"
    assert documented <= commands
