"""The shape the redesign promised (issue 13), kept by tests: small modules,
a supervisor class that fits on a few screens, no import cycle at run time,
and the Python API and the Django command independent of the CLI."""

from __future__ import annotations

import ast
import pathlib

import procrastinate_prefork

PACKAGE = pathlib.Path(procrastinate_prefork.__file__).parent
MAX_MODULE_LINES = 400
MAX_SUPERVISOR_LINES = 250


def _modules() -> dict[str, pathlib.Path]:
    return {
        ".".join(path.relative_to(PACKAGE).with_suffix("").parts): path
        for path in PACKAGE.rglob("*.py")
        if "migrations" not in path.parts
    }


def _runtime_imports(name: str, path: pathlib.Path) -> set[str]:
    """Modules of the package that ``name`` imports when it is imported: the
    top-level statements, not those under ``if TYPE_CHECKING`` or inside
    functions."""
    return _imports(name, path, ast.parse(path.read_text()).body)


def _all_imports(name: str, path: pathlib.Path) -> set[str]:
    """Every module of the package that ``name`` names in an import, those
    for the type checker and inside functions too."""
    return _imports(name, path, list(ast.walk(ast.parse(path.read_text()))))


def _imports(
    name: str, path: pathlib.Path, nodes: list[ast.stmt] | list[ast.AST]
) -> set[str]:
    package = name.rpartition(".")[0] if path.name != "__init__.py" else name
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                prefix = ".".join(base)
            elif (node.module or "").startswith("procrastinate_prefork"):
                prefix = ""
            else:
                continue
            module = (node.module or "").removeprefix("procrastinate_prefork")
            module = module.lstrip(".")
            target = ".".join(p for p in (prefix, module) if p)
            found.add(target)
            found.update(f"{target}.{a.name}".strip(".") for a in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("procrastinate_prefork."):
                    found.add(alias.name.removeprefix("procrastinate_prefork."))
    return found


def test_no_module_is_over_400_lines():
    long = {
        name: n
        for name, path in _modules().items()
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


#: what a reader finds by folder (issue 23): each role is a subpackage, and
#: what is private in procrastinate has one of its own
ROLES = {"supervisor", "child", "fleet", "config", "observability", "contrib", "compat"}
MAX_TOP_LEVEL_MODULES = 12


def test_the_package_is_folders_by_role_with_few_modules_on_top():
    folders = {
        p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()
    }
    assert folders == ROLES
    top = [p.name for p in PACKAGE.glob("*.py")]
    assert len(top) <= MAX_TOP_LEVEL_MODULES, sorted(top)


def test_the_supervisor_class_is_under_250_lines():
    tree = ast.parse((PACKAGE / "supervisor" / "arbiter.py").read_text())
    [cls] = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    assert cls.end_lineno is not None
    assert cls.end_lineno - cls.lineno + 1 < MAX_SUPERVISOR_LINES


def test_no_import_cycle_at_run_time():
    modules = _modules()
    graph = {
        name: {m for m in _runtime_imports(name, path) if m in modules and m != name}
        for name, path in modules.items()
    }
    cycles = []
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for other in sorted(graph[name]):
            if state.get(other) == 1:
                cycles.append([*path[path.index(other) :], other])
            elif other not in state:
                visit(other, [*path, other])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_no_part_of_the_supervisor_imports_the_supervisor():
    """Issue 23: each part is given what it reads; none imports the loop's
    class, not even for the type checker (the mixins' import circle)."""
    importers = {
        name
        for name, path in _modules().items()
        if name != "supervisor.arbiter"
        and {"supervisor.arbiter", "supervisor.arbiter.Supervisor"}
        & _all_imports(name, path)
    }
    # the launcher builds and runs it
    assert importers == {"launcher"}


def test_the_supervisor_parts_have_no_import_cycle_even_for_the_type_checker():
    modules = {n: p for n, p in _modules().items() if n.startswith("supervisor.")}
    graph = {
        name: {m for m in _all_imports(name, path) if m in modules and m != name}
        for name, path in modules.items()
    }

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for other in graph[start] - seen:
            seen.add(other)
            if other == goal or reaches(other, goal, seen):
                return True
        return False

    assert [name for name in sorted(graph) if reaches(name, name, set())] == []


def test_the_api_and_the_django_command_do_not_import_the_cli():
    modules = _modules()
    for name in ("api", "contrib.django.management.commands.prefork_worker"):
        assert "cli" not in _runtime_imports(name, modules[name]), name
