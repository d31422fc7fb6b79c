"""The webhook's write path knows nothing of its consumers: the group chat plugs into
it (persistence.insert_steps, the public signals) the way a site's code would."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "django_twilio_convlink"
WRITE_PATH = ["views.py", "signature.py", "events.py", "deliveries.py", "handlers.py", "persistence.py",
              "linking.py", "accounts.py"]
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


@pytest.mark.parametrize("module", WRITE_PATH)
def test_the_write_path_does_not_import_the_group_chat(module):
    assert not imported_modules(PACKAGE / module) & CONSUMERS
    assert "group_chat" not in (PACKAGE / module).read_text().replace("group_chat_", "").replace(
        "is_group_chat", ""), f"{module} names the group chat"
