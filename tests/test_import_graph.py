"""The import graph of ``service/``, ``bench/`` and ``loadgen/`` has no cycles, each folder
of ``service/`` imports only the folders before it in the order docs/architecture.md gives
(core < storage < runtime < api < edge < ops), and the product never imports the benchmark
or the load generator.

Built from the source text (every ``import``/``from`` statement, including those inside
functions and under ``if TYPE_CHECKING:``: a late or typing-only import hides a cycle or a
backwards arrow from Python, not from a reader, and two modules that each need the other
are one concept split in two), so a new module is covered without editing a list."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("service", "bench", "loadgen")
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports (``from a import b`` counts as ``a.b`` when
    that is a module, else as ``a``)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            # `import a.b.c` names a.b.c; keep the longest prefix that is one of ours
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def _layers() -> list[str]:
    """The folders of ``service/`` in the order of the layer table of docs/architecture.md
    (its rows ``| `service/<folder>/` | …``), so the doc and this test cannot disagree."""
    return re.findall(r"^\| `service/(\w+)/` \|", ARCHITECTURE.read_text(encoding="utf-8"), flags=re.MULTILINE)


def _against_the_order(graph: dict[str, set[str]], layers: list[str]) -> list[str]:
    """Every import of a ``service`` module from a folder later in ``layers`` than its own:
    ``"importer -> imported"``. A module outside every folder of ``layers`` is one too."""
    rank = {layer: i for i, layer in enumerate(layers)}

    def layer_of(module: str) -> int | None:
        parts = module.split(".")
        return rank.get(parts[1]) if len(parts) > 1 and parts[0] == "service" else None

    bad = []
    for name, targets in sorted(graph.items()):
        if not name.startswith("service."):
            continue
        own = layer_of(name)
        for target in sorted(targets):
            if not target.startswith("service."):
                continue
            theirs = layer_of(target)
            if own is None or theirs is None or theirs > own:
                bad.append(f"{name} -> {target}")
    return bad


def test_the_graph_sees_the_packages():
    graph = _graph()
    assert "service.ops.cli" in graph and "bench.cli" in graph and "loadgen.cli" in graph
    assert "service.core.settings" in graph["service.ops.cli"]


def test_imports_have_no_cycles():
    cycle = _find_cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_service_never_imports_bench_or_loadgen():
    bad = sorted(
        f"{name} -> {target}"
        for name, targets in _graph().items()
        if name.startswith("service")
        for target in targets
        if target.split(".")[0] in ("bench", "loadgen")
    )
    assert bad == []


def test_the_layer_table_names_every_folder_of_the_service_once():
    layers = _layers()
    folders = sorted(p.name for p in (ROOT / "service").iterdir() if (p / "__init__.py").exists())
    assert layers[:2] == ["core", "storage"] and len(layers) == len(set(layers))
    assert sorted(layers) == folders


def test_each_folder_imports_only_the_folders_before_it():
    bad = _against_the_order(_graph(), _layers())
    assert bad == [], "imports against the layer order of docs/architecture.md:\n  " + "\n  ".join(bad)


def test_the_order_check_finds_backward_imports():
    layers = ["core", "storage", "ops"]
    graph = {
        "service.core.a": {"service.core.b"},  # the same folder: fine
        "service.ops.cli": {"service.core.a", "service.storage.s"},  # earlier folders: fine
        "service.storage.s": {"service.ops.backup", "numpy"},  # a later folder: not
        "service.extra.x": {"service.core.a"},  # a folder the order does not place
    }
    assert _against_the_order(graph, layers) == [
        "service.extra.x -> service.core.a",
        "service.storage.s -> service.ops.backup",
    ]


def test_the_cycle_finder_finds_cycles():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None
