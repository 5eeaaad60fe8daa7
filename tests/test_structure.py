"""The layout keeps its promises: the predictions package has no import cycle, the ML
package and training/ import no Django app, the code a Celery pool parent or the web
process imports never loads TensorFlow, and no product module outgrows its room."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
PACKAGE = "predictions"


def _modules(root: Path) -> dict[str, Path]:
    """Dotted name -> file of every module of the package (a package is its __init__)."""
    modules = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Modules of the package that ``name`` imports, at module level or inside a
    function, absolute or relative; ``from x import y`` counts ``x.y`` when it is a module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    # A service queues its task with an import inside the function (the tasks import the
    # services at module level): the one sanctioned function-level back edge.
    in_functions = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        for inner in ast.walk(node)
    }
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and id(node) in in_functions and (node.module or "").endswith("tasks"):
            continue
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets.add(module)
            targets.update(f"{module}.{alias.name}" for alias in node.names)
    found = set()
    for target in targets:
        # The most specific module the import names (``predictions.stats.x`` -> the
        # module if it exists, else the package that defines ``x``).
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles, state = [], {}  # state: 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def test_the_predictions_package_has_no_import_cycle() -> None:
    modules = _modules(BASE_DIR)
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert graph["predictions.tasks"] >= {"predictions.services"}  # the graph is really read

    cycles = _cycles(graph)

    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)


def test_the_cycle_finder_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    package = tmp_path / PACKAGE
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from . import b\n")
    (package / "b.py").write_text("def f():\n    from predictions.a import x\n")
    modules = _modules(tmp_path)

    graph = {name: _imports(name, path, modules) for name, path in modules.items()}

    assert _cycles(graph) == [["predictions.a", "predictions.b", "predictions.a"]]


def _last_line_of_fresh_python(code: str, *, django: bool) -> str:
    """Run ``code`` in a new interpreter (with Django's settings module, or without) and
    return the last line it printed; fail with its stderr if it crashed."""
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    if django:
        env["DJANGO_SETTINGS_MODULE"] = "imagerec.settings"
    result = subprocess.run([sys.executable, "-c", code], cwd=BASE_DIR, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def test_what_a_worker_pool_parent_imports_does_not_load_tensorflow() -> None:
    """The pool parent imports the tasks (autodiscovery) and ``predictions.worker``
    (at worker_init); TensorFlow must load only in the pool child, with the model."""
    code = (
        "import sys, django; django.setup(); "
        "import imagerec.celery, predictions.tasks, predictions.worker, predictions.explanations.tasks, "
        "predictions.reprocessing.tasks, predictions.operations.tasks; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras')))"
    )
    assert _last_line_of_fresh_python(code, django=True) == "[]"


# What the Django-free code may not import: Django, DRF, Celery and the project's apps.
DJANGO_SIDE = ("django", "rest_framework", "celery", "kombu", "predictions", "accounts", "imagerec")
ML_SIDE = ("ml", "training")


def _top_level_imports(path: Path) -> set[str]:
    """The top-level package of every import in ``path`` (absolute imports; relative ones
    stay inside their own package)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_the_ml_package_and_training_import_no_django_app() -> None:
    offenders = {
        str(path.relative_to(BASE_DIR)): sorted(_top_level_imports(path) & set(DJANGO_SIDE))
        for package in ML_SIDE
        for path in sorted((BASE_DIR / package).rglob("*.py"))
    }

    assert {path: names for path, names in offenders.items() if names} == {}
    assert len(offenders) > 20  # every module of both packages was read


def test_importing_every_ml_and_training_module_loads_no_django() -> None:
    """The same, as Python sees it: importing all of ``ml`` and ``training`` pulls in no
    Django, Celery or project app, even indirectly (through a third-party package)."""
    modules = [
        ".".join(path.relative_to(BASE_DIR).with_suffix("").parts).removesuffix(".__init__")
        for package in ML_SIDE
        for path in sorted((BASE_DIR / package).rglob("*.py"))
    ]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(DJANGO_SIDE)!r}))"
    )
    assert _last_line_of_fresh_python(code, django=False) == "[]"


# Product modules may not grow past this many lines (migrations aside): past it, a
# concern has outgrown its room and is split.
MAX_MODULE_LINES = 400
PRODUCT_PACKAGES = ("predictions", "accounts", "imagerec", "ml", "training")


def test_no_product_module_outgrows_its_room() -> None:
    sizes = {
        str(path.relative_to(BASE_DIR)): len(path.read_text().splitlines())
        for package in PRODUCT_PACKAGES
        for path in (BASE_DIR / package).rglob("*.py")
        if "migrations" not in path.parts
    }

    assert {path: lines for path, lines in sizes.items() if lines > MAX_MODULE_LINES} == {}
