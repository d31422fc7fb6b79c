"""The webhook's write path knows nothing of its consumers: the group chat plugs into
it (persistence.insert_steps, the public signals) the way a site's code would."""

import ast
import importlib
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "django_twilio_convlink"
WRITE_PATH = ["views.py", "signature.py", "events.py", "deliveries.py", "handlers.py", "persistence.py",
              "linking", "accounts.py"]
CONSUMERS = {"group_chat", "tasks", "api"}


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            names.add((node.module or "").split(".")[0])
            names.update(alias.name for alias in node.names if not node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name.split(".")[-1] for alias in node.names)
    return names


def write_path_files() -> list[str]:
    files = []
    for name in WRITE_PATH:
        path = PACKAGE / name
        files += [str(p.relative_to(PACKAGE)) for p in sorted(path.glob("*.py"))] if path.is_dir() else [name]
    return files


@pytest.mark.parametrize("module", write_path_files())
def test_the_write_path_does_not_import_the_group_chat(module):
    assert not imported_modules(PACKAGE / module) & CONSUMERS
    assert "group_chat" not in (PACKAGE / module).read_text().replace("group_chat_", "").replace(
        "is_group_chat", ""), f"{module} names the group chat"


README = PACKAGE.parent / "README.rst"


def documented_names() -> list[str]:
    """Every ``django_twilio_convlink...`` dotted name and ``from ... import`` of the README,
    and the ``linking.`` functions it names in prose."""
    text = README.read_text()
    names = set(re.findall(r"\bdjango_twilio_convlink(?:\.\w+)+", text))
    for module, imported in re.findall(r"from (django_twilio_convlink[\w.]*) import ([\w, ]+)", text):
        names.update(f"{module}.{name.strip()}" for name in imported.split(","))
    names.update(f"django_twilio_convlink.linking.{name}" for name in re.findall(r"``linking\.(\w+)", text))
    return sorted(names)


@pytest.mark.parametrize("name", documented_names())
def test_what_the_readme_documents_is_importable(name):
    try:
        importlib.import_module(name)
    except ImportError:
        module, _, attribute = name.rpartition(".")
        assert hasattr(importlib.import_module(module), attribute), f"README names {name}"


def test_no_text_cites_a_numbered_behaviour_or_issue():
    # Their numbers point into texts that are not in the repository.
    root = PACKAGE.parent
    files = [*root.glob("tests/*.py"), *root.glob("bench/*"), *PACKAGE.rglob("*.py"), *root.glob("*.rst")]
    cited = [f"{path.relative_to(root)}: {match}" for path in files if path.is_file()
             for match in re.findall(r"\b(?:[Bb]ehaviou?r|[Ii]ssue) \d+", path.read_text())]
    assert cited == []
