"""The package layering, read from the source with ``ast`` (nothing is imported),
and the installed package names.

    mobile_derm_quality  (numpy + OpenCV; never mobile_derm, mobile_derm_export or TensorFlow)
      <- mobile_derm core (datasets, model, training, evaluation, app; errors, io_utils, taxonomy, tf_setup)
      <- mobile_derm_export
      <- mobile_derm's top layer (cli, demo, api)

and no import cycle anywhere. Imports inside functions count (they run too, only
later); imports under ``if TYPE_CHECKING:`` do not (they never run).
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# folder -> the package name it installs as (setup.cfg package_dir)
PACKAGES = {"mobile_derm": REPO / "mobile_derm", "mobile_derm_export": REPO / "export",
            "mobile_derm_quality": REPO / "quality_checks"}
# the package itself belongs to the top layer: its lazy re-exports come from mobile_derm.api
TOP_LAYER = {"mobile_derm", "mobile_derm.cli", "mobile_derm.demo", "mobile_derm.api"}
TENSORFLOW = {"tensorflow", "tf_keras", "keras", "tensorflow_lite_support", "tflite_support"}


def module_files(packages: dict[str, Path]) -> dict[str, Path]:
    """Dotted module name -> source file, for every .py under each package folder."""
    modules = {}
    for package, folder in packages.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
    """Every Import/ImportFrom node, at any depth, except under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)  # the else branch does run
            continue
        stack.extend(ast.iter_child_nodes(node))


def imported_names(module: str, path: Path, known: set[str]) -> set[str]:
    """Dotted names ``module`` imports: ``import a.b`` -> a.b; ``from a import b`` ->
    a.b when that is one of ``known`` modules, else a; relative imports resolved."""
    is_package = path.name == "__init__.py"
    names = set()
    for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = module.split(".")
            anchor = anchor if is_package else anchor[:-1]
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join(anchor + ([base] if base else []))
        for alias in node.names:
            candidate = f"{base}.{alias.name}"
            names.add(candidate if candidate in known else base)
    return names


def import_graph(packages: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules of ``packages`` it imports (imports of anything else left out)."""
    modules = module_files(packages)
    known = set(modules)
    return {module: {name for name in imported_names(module, path, known) if name in known and name != module}
            for module, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None; the same answer on every run."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" once fully explored
    for start in sorted(graph):
        if start in state:
            continue
        path, branches = [start], [iter(sorted(graph[start]))]
        state[start] = "open"
        while path:
            nxt = next(branches[-1], None)
            if nxt is None:
                state[path.pop()] = "done"
                branches.pop()
            elif state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = "open"
                path.append(nxt)
                branches.append(iter(sorted(graph.get(nxt, ()))))
    return None


def forbidden_path(start: str, forbidden, packages: dict[str, Path] = PACKAGES) -> list[str] | None:
    """The shortest import chain [start, ..., name] from ``start`` to a name whose
    top-level package is in ``forbidden`` (through our own modules), or None."""
    modules = module_files(packages)
    known = set(modules)
    came_from = {start: None}
    queue = [start]
    while queue:
        module = queue.pop(0)
        for name in sorted(imported_names(module, modules[module], known)):
            if name in came_from:
                continue
            came_from[name] = module
            if name.split(".")[0] in forbidden:
                chain = [name]
                while came_from[chain[-1]] is not None:
                    chain.append(came_from[chain[-1]])
                return chain[::-1]
            if name in known:
                queue.append(name)
    return None


def _violations(prefix: str, forbidden, allowed=frozenset()) -> list[str]:
    """One import chain per module under ``prefix`` (outside ``allowed``) that reaches ``forbidden``."""
    found = []
    for module in sorted(module_files(PACKAGES)):
        if module not in allowed and (module == prefix or module.startswith(prefix + ".")):
            chain = forbidden_path(module, forbidden)
            if chain:
                found.append(" -> ".join(chain))
    return found


def test_no_import_cycles():
    cycle = find_cycle(import_graph(PACKAGES))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_quality_gate_imports_neither_the_classifier_nor_tensorflow():
    assert _violations("mobile_derm_quality", {"mobile_derm", "mobile_derm_export"} | TENSORFLOW) == []


def test_only_the_top_layer_of_mobile_derm_imports_the_export_package():
    # core (datasets, model, training, evaluation, app, errors, io_utils, taxonomy, tf_setup)
    # reaches mobile_derm_export by no chain of imports, direct or through other modules
    assert _violations("mobile_derm", {"mobile_derm_export"}, allowed=TOP_LAYER) == []


def test_the_app_side_never_imports_tensorflow():
    # mobile_derm.app runs on a phone-like stack: LiteRT, numpy, OpenCV
    assert _violations("mobile_derm.app", TENSORFLOW) == []


@pytest.mark.parametrize("where", ["elsewhere", "repository root"])
@pytest.mark.parametrize("package", ["mobile_derm_export", "mobile_derm_quality"])
def test_folders_import_only_under_their_installed_names(tmp_path, where, package):
    folder = PACKAGES[package]
    cwd = REPO if where == "repository root" else tmp_path
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # as a user's shell has it

    def python(code: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)

    wrong = python(f"import {folder.name}")
    assert wrong.returncode != 0
    # elsewhere no such module; at the root the folder is on sys.path and refuses the wrong name itself
    expected = f"import {package}, not {folder.name}" if where == "repository root" else "ModuleNotFoundError"
    assert expected in wrong.stderr, wrong.stderr[-1000:]
    right = python(f"import {package}; print({package}.__file__)")
    assert right.returncode == 0, right.stderr[-1000:]
    assert Path(right.stdout.strip()) == folder / "__init__.py"


# ---------------------------------------------------------------- the checker itself


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_a_planted_cycle_through_a_function_level_import_is_found(tmp_path):
    _write(tmp_path / "pkg", {
        "__init__.py": "",
        "a.py": "import pkg.b\n",
        "b.py": "def later():\n    from pkg import c\n",
        "c.py": "import os\nfrom .a import helper\n",
        "sub/__init__.py": "from .. import a\n",
    })
    graph = import_graph({"pkg": tmp_path / "pkg"})
    assert graph["pkg.b"] == {"pkg.c"} and graph["pkg.c"] == {"pkg.a"} and graph["pkg.sub"] == {"pkg.a"}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]
    # and a forbidden import three modules away is reported with its chain
    assert forbidden_path("pkg.sub", {"os"}, {"pkg": tmp_path / "pkg"}) == ["pkg.sub", "pkg.a", "pkg.b", "pkg.c", "os"]


def test_type_checking_imports_and_names_from_a_package_resolve_as_they_run(tmp_path):
    _write(tmp_path / "pkg", {
        "__init__.py": "VERSION = 1\n",
        "a.py": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import Thing\n"
                 "else:\n    from pkg import VERSION\n"),
        "b.py": "from pkg.a import x\n",
    })
    graph = import_graph({"pkg": tmp_path / "pkg"})
    assert graph["pkg.a"] == {"pkg"}  # the TYPE_CHECKING import does not run; VERSION is no module
    assert find_cycle(graph) is None
