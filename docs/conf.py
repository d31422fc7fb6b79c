"""Sphinx configuration of django-twilio-convlink's documentation.

Build: ``tox -e docs``, or ``pip install -e '.[docs]'`` and
``sphinx-build -W --keep-going -b html docs docs/_build/html``.

Autodoc imports the package, so Django is set up first with the minimal settings in
``_ext/docs_settings.py`` (the test app's models stand in for a site's).
"""

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path[:0] = [str(DOCS.parent), str(DOCS / "_ext")]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "docs_settings")

import django  # noqa: E402

django.setup()

import django_twilio_convlink  # noqa: E402

project = "django-twilio-convlink"
author = "django-twilio-convlink contributors"
copyright = "2026, " + author
release = django_twilio_convlink.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "convlink_commands",
]

exclude_patterns = ["_build"]
html_theme = "furo"
html_title = f"django-twilio-convlink {release}"
# The screenshot lives in docs/screenshots/, where README.rst shows it too.
html_static_path: list[str] = []

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"undoc-members": False}
# Literal dashes: "--url" and "--deploy" are options, never en dashes.
smartquotes = False
