"""``.. django-command:: name``: a management command's options, read from the command's
own argument parser, so the page cannot drift from what ``--help`` says.

Renders the command's ``help``, its usage line and one ``.. option::`` per argument it
adds (Django's common options, ``--verbosity`` and the like, are left to Django's
documentation). Example output stays hand-written next to the directive.
"""

from __future__ import annotations

import argparse
import re

from django.core.management import load_command_class
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

APP = "django_twilio_convlink"
# Every command has these (BaseCommand.create_parser); Django documents them.
COMMON = {"help", "version", "verbosity", "settings", "pythonpath", "traceback", "no_color",
          "force_color", "skip_checks"}


def _text(value: str) -> str:
    """Plain help text as reStructuredText: markup characters taken literally."""
    return re.sub(r"([\\*`|])", r"\\\1", " ".join(value.split()))


def _option_lines(parser: argparse.ArgumentParser) -> list[str]:
    formatter = parser._get_formatter()
    exclusive = {id(action): group for group in parser._mutually_exclusive_groups
                 for action in group._group_actions}
    lines: list[str] = []
    for action in parser._actions:
        if action.dest in COMMON or action.help == argparse.SUPPRESS:
            continue
        if action.option_strings:
            metavar = "" if action.nargs == 0 else " " + formatter._format_args(action, action.dest.upper())
            names = ", ".join(f"{name}{metavar}" for name in action.option_strings)
        else:
            names = formatter._format_args(action, action.dest)
        help_text = _text(formatter._expand_help(action)) if action.help else ""
        extra = []
        if action.choices:
            extra.append("One of " + ", ".join(f"``{choice}``" for choice in action.choices) + ".")
        group = exclusive.get(id(action))
        if group is not None:
            others = [o.option_strings[0] for o in group._group_actions
                      if o is not action and o.option_strings]
            if others:
                extra.append("Not together with " + ", ".join(f"``{o}``" for o in others) + ".")
        lines += [f".. option:: {names}", ""]
        body = " ".join(part for part in [help_text, *extra] if part)
        lines += [f"   {body or 'See above.'}", ""]
    return lines


class DjangoCommandDirective(SphinxDirective):
    required_arguments = 1
    has_content = False

    def run(self) -> list:
        name = self.arguments[0]
        command = load_command_class(APP, name)
        parser = command.create_parser("manage.py", name)
        usage = " ".join(parser.format_usage().split())
        for common in ("[-h]", "[--version]", "[-v {0,1,2,3}]", "[--settings SETTINGS]",
                       "[--pythonpath PYTHONPATH]", "[--traceback]", "[--no-color]",
                       "[--force-color]", "[--skip-checks]"):
            usage = usage.replace(" " + common, "")
        usage = usage.removeprefix("usage: ")
        lines = [f".. program:: {name}", ""]
        if command.help:
            lines += [_text(command.help), ""]
        lines += ["::", "", f"    {usage}", ""]
        lines += _option_lines(parser)
        container = StringList(lines, source=f"<{name} --help>")
        from docutils import nodes

        section = nodes.container()
        nested_parse_with_titles(self.state, container, section)
        return section.children


def setup(app: Sphinx) -> dict:
    app.add_directive("django-command", DjangoCommandDirective)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
