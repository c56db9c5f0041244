"""The package's shape: the pipeline's stages import only stages before them, there is no import
circle, and the error printer knows nothing but the errors. Read from the source (every import,
lazy ones inside functions included), so a new upward import fails here, not in review."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "rnnray"

# The pipeline, bottom to top: a module may import its own stage or an earlier one.
STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("errors", "cli", "paths", "weights", "kinds", "encoders.catalog", "runtime", "rnn", "results.atomic", "results.folder",
              "results.records", "zoo.languages", "zoo.mnist", "zoo.storage", "analysis.statistics")),
    ("config", ("config",)),
    ("zoo", ("zoo", "zoo.builder", "zoo.trainer", "zoo.check", "zoo.authors")),
    ("encoders", ("encoders",)),
    ("emulation", ("emulation",)),
    ("train", ("train",)),
    ("results", ("results", "results.loading")),  # load_best needs the trained model's classes
    ("sweep", ("sweep",)),
    ("analysis", ("analysis",)),
    ("report", ("report",)),
    ("tools", ("job", "bench", "reference", "evaluate", "label_oracle", "")),  # entry points; "" is the package itself
]


def _stage(module: str) -> int:
    for i, (_, members) in enumerate(STAGES):
        for m in members:
            if module == m:
                return i
    for i, (_, members) in enumerate(STAGES):  # a package's modules sit with it unless named on their own
        for m in members:
            if "." not in m and module.startswith(f"{m}."):
                return i
    raise AssertionError(f"rnnray.{module} is in no stage of STAGES: place it in the pipeline")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_main_guard(node: ast.AST) -> bool:
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__")


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The rnnray modules ``path`` imports (relative and absolute), outside ``if __name__ == ...``."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _is_main_guard(node):
            return
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and (node.module == "rnnray" or node.module.startswith("rnnray.")):
                target = node.module.removeprefix("rnnray").lstrip(".")
            else:
                target = None
            if target is not None:
                subs = [f"{target}.{a.name}".lstrip(".") for a in node.names]
                hits = [s for s in subs if s in modules]
                found.update(hits or [target])
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "rnnray" or a.name.startswith("rnnray."):
                    found.add(a.name.removeprefix("rnnray").lstrip("."))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    found.discard(name)
    return found


def _graph() -> dict[str, set[str]]:
    files = [p for p in PACKAGE.rglob("*.py") if p.name != "__main__.py"]
    modules = {_module_name(p) for p in files}
    return {_module_name(p): _imports(p, modules) for p in files}


def test_the_graph_reader_sees_relative_lazy_and_absolute_imports(tmp_path):
    graph = _graph()
    assert "emulation.emulator" in graph["emulation.batches"]  # module level, relative
    assert "train" in graph["sweep.trial"]  # inside a function: ``from .. import train``
    assert "rnn" in graph["encoders.probing"]  # ``from .. import rnn``: the module, not the package
    assert "analysis.evaluate" in graph["job"] and "report" in graph["job"]


def test_no_stage_imports_a_later_one():
    upward = [f"rnnray.{m} ({STAGES[_stage(m)][0]}) imports rnnray.{d} ({STAGES[_stage(d)][0]})"
              for m, deps in sorted(_graph().items()) for d in sorted(deps) if _stage(d) > _stage(m)]
    assert not upward, "\n".join(upward)


def test_no_import_circle():
    graph = _graph()
    state: dict[str, int] = {}
    circles: list[list[str]] = []

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for d in sorted(graph.get(node, ())):
            if state.get(d) == 1:
                circles.append(path[path.index(d):] + [d])
            elif d not in state:
                walk(d, path + [d])
        state[node] = 2

    for m in sorted(graph):
        if m not in state:
            walk(m, [m])
    assert not circles, "; ".join(" -> ".join(c) for c in circles)


def test_the_error_printer_imports_only_the_errors():
    assert _graph()["cli"] == {"errors"}


@pytest.mark.parametrize("module", ["config.base", "zoo.storage", "results.folder", "encoders.registry", "encoders.budget",
                                    "encoders.catalog"])
def test_every_user_error_derives_from_one_base(module):
    """``friendly_errors`` catches ``UserError`` only: each error class a user can fix must derive from it."""
    import importlib

    from rnnray.errors import UserError

    mod = importlib.import_module(f"rnnray.{module}")
    errors = [v for k, v in vars(mod).items() if isinstance(v, type) and issubclass(v, Exception)
              and v.__module__ == mod.__name__ and k != "SweepInterrupted"]
    assert errors and all(issubclass(e, UserError) for e in errors), errors


def test_the_encoder_names_are_one_torch_free_table():
    """One table of names (rnnray.encoders.catalog), importable without torch, which also checks a
    plug-in's name without importing it; the config checks names against it and the registry builds
    exactly its entries, each through the resolver a plug-in goes through (one path)."""
    import subprocess
    import sys

    code = ("import sys, rnnray.encoders.catalog as c; c.check_name('dws'); c.check_name('nowhere.mod:Enc'); "
            "assert 'torch' not in sys.modules, 'torch imported'; print(','.join(c.ENCODER_NAMES))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    from rnnray.config import ENCODER_NAMES
    from rnnray.encoders import ENCODERS
    from rnnray.encoders.catalog import BASELINES, BUILTINS
    from rnnray.encoders.registry import SPECS
    from rnnray.encoders.resolver import resolve

    assert tuple(out.stdout.strip().split(",")) == ENCODER_NAMES == ENCODERS
    assert {n: s.reference for n, s in SPECS.items()} == {**BUILTINS, **BASELINES}
    assert all(SPECS[n] is resolve(n) and SPECS[n].builtin for n in SPECS)


def test_the_zoo_kind_is_spelled_in_one_place():
    """Outside the kinds table, the config models and the zoo recipes (where each kind's recipe and
    file formats live), no module compares a zoo kind's name: it looks the difference up in
    rnnray.kinds (layout, task, inputs) or in the table that owns it (downstream targets)."""
    import re

    pattern = re.compile(r'''[!=]=\s*["'](formal_languages|mnist)["']|["'](formal_languages|mnist)["']\s*[!=]=''')
    allowed = ("kinds.py", "config/", "zoo/")
    hits = [f"{p.relative_to(PACKAGE)}:{i}" for p in sorted(PACKAGE.rglob("*.py"))
            if not p.relative_to(PACKAGE).as_posix().startswith(allowed)
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not hits, hits


def test_every_command_keeps_its_entry_point():
    """The commands of the README, where the code moved, are still there (thin entry points)."""
    import importlib

    from rnnray.__main__ import COMMANDS

    for name, (module, function, _) in COMMANDS.items():
        assert callable(getattr(importlib.import_module(module), function)), name
    for module in ("evaluate", "label_oracle", "reference", "report.__main__", "bench.__main__", "sweep.__main__",
                   "train.__main__", "zoo.__main__"):
        assert importlib.util.find_spec(f"rnnray.{module}") is not None, module
    assert callable(importlib.import_module("rnnray.evaluate").main)
    assert callable(importlib.import_module("rnnray.label_oracle").main)
