"""The house runs one way: the webhook's write path knows nothing of its consumers (the
group chat plugs into it through persistence.register_insert_step, tasks.register and
the public signals, the way a site's code would), and no module of the package
imports, directly or around a circle, one that imports it."""

import ast
import importlib
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "django_twilio_convlink"
WRITE_PATH = ["views.py", "signature.py", "events.py", "deliveries.py", "handlers.py", "persistence.py",
              "linking", "accounts.py", "exceptions.py", "choices.py"]
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


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """The package's modules (migrations aside: Django imports them, nothing else
    does) and, for each, the package modules it imports: at module level, inside
    functions, under ``if TYPE_CHECKING`` alike. ``from . import name`` is an edge to
    the package (Python runs its ``__init__`` first) and to the submodule ``name``
    when there is one."""
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py") if "migrations" not in path.parts}

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                targets = [target, *(f"{target}.{alias.name}" for alias in node.names
                                     if f"{target}.{alias.name}" in modules)]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            edges.update(module for t in targets if (module := known(t)) and module != name)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each import cycle once, as the modules along it (a depth-first search)."""
    found, done = [], set()

    def visit(module: str, path: list[str]) -> None:
        for target in sorted(graph[module]):
            if target in path:
                cycle = path[path.index(target):]
                start = cycle.index(min(cycle))
                cycle = cycle[start:] + cycle[:start]
                if cycle not in found:
                    found.append(cycle)
            elif target not in done:
                visit(target, [*path, target])
        done.add(module)

    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    return found


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert "django_twilio_convlink.group_chat.wiring" in graph  # the walk sees subpackages
    assert cycles(graph) == []


def test_the_cycle_finder_finds_cycles():
    # The test above is only as good as the finder: it must see a cycle through
    # function-level imports, and a longer one.
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"x": {"y"}, "y": set()}) == []


def test_the_graph_sees_function_level_and_relative_imports():
    graph = import_graph()
    # management commands import three levels up; checks imports tasks in a function.
    command = "django_twilio_convlink.management.commands.prune_twilio_webhooks"
    assert "django_twilio_convlink.conf" in graph[command]
    assert "django_twilio_convlink.tasks" in graph["django_twilio_convlink.checks"]
    assert "django_twilio_convlink.tasks" in graph["django_twilio_convlink.group_chat.wiring"]


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


DOCUMENTS = [PACKAGE.parent / "README.rst", *sorted((PACKAGE.parent / "docs").glob("*.rst"))]


def documented_names() -> list[str]:
    """Every ``django_twilio_convlink...`` dotted name and ``from ... import`` of README.rst
    and the docs' pages, and the ``linking.`` functions they name in prose."""
    text = "\n".join(path.read_text() for path in DOCUMENTS)
    names = set(re.findall(r"\bdjango_twilio_convlink(?:\.\w+)+", text))
    for module, imported in re.findall(r"from (django_twilio_convlink[\w.]*) import ([\w, ]+)", text):
        names.update(f"{module}.{name.strip()}" for name in imported.split(","))
    names.update(f"django_twilio_convlink.linking.{name}" for name in re.findall(r"``linking\.(\w+)", text))
    return sorted(names)


@pytest.mark.parametrize("name", documented_names())
def test_what_the_docs_name_is_importable(name):
    try:
        importlib.import_module(name)
    except ImportError:
        module, _, attribute = name.rpartition(".")
        assert hasattr(importlib.import_module(module), attribute), f"the docs name {name}"


def test_no_text_cites_a_numbered_behaviour_or_issue():
    # Their numbers point into texts that are not in the repository.
    root = PACKAGE.parent
    files = [*root.glob("tests/**/*.py"), *root.glob("bench/*"), *PACKAGE.rglob("*.py"), *root.glob("*.rst"),
             *root.glob("docs/**/*.rst"), *root.glob("docs/**/*.py"), *root.glob("example_project/**/*.py")]
    cited = [f"{path.relative_to(root)}: {match}" for path in files if path.is_file()
             for match in re.findall(r"\b(?:[Bb]ehaviou?r|[Ii]ssue) #?\d+", path.read_text())]
    assert cited == []


def test_registering_an_insert_step_twice_runs_it_once():
    # AppConfig.ready() may run more than once; the group chat registers its step there.
    from django_twilio_convlink import persistence
    from django_twilio_convlink.group_chat.wiring import mark_for_forward

    before = list(persistence._insert_steps)
    assert before.count(mark_for_forward) == 1  # registered at startup
    persistence.register_insert_step(mark_for_forward)
    assert persistence._insert_steps == before


def test_a_task_name_belongs_to_one_function():
    from django.core.exceptions import ImproperlyConfigured

    from django_twilio_convlink import tasks
    from django_twilio_convlink.group_chat import FORWARD_TASK, forward_task

    tasks.register(FORWARD_TASK, forward_task, recovery="again")  # the same again: harmless
    with pytest.raises(ImproperlyConfigured, match="already registered"):
        tasks.register(FORWARD_TASK, print, recovery="")


def test_the_bench_readme_shows_the_statement_counts_of_the_bench():
    # The figures live in one table (bench/statements.py); bench/README.rst shows it.
    from bench.statements import STATEMENTS

    text = (PACKAGE.parent / "bench" / "README.rst").read_text()
    shown = {case: int(count) for case, count in re.findall(r"^(\S.*?)\s{2,}(\d+)$", text, re.MULTILINE)
             if case in STATEMENTS}
    assert shown == STATEMENTS


@pytest.mark.parametrize("name", ["enqueue", "logger", "not a name"])
def test_a_task_name_cannot_shadow_the_tasks_module(name):
    from django.core.exceptions import ImproperlyConfigured

    from django_twilio_convlink import tasks

    with pytest.raises(ImproperlyConfigured, match="cannot name a task"):
        tasks.register(name, print, recovery="")
