"""The pure core must not import I/O, frameworks or the clock (design: time is passed in).

Every module in ``service/core/`` is checked, so a new one is covered without editing a list:
what importing it loads, and every import statement its source holds (inside functions and
under ``if TYPE_CHECKING:`` too, which importing it would not run)."""

import ast
import inspect
import pkgutil
import subprocess
import sys

import service.core

CORE = sorted(m.name for m in pkgutil.walk_packages(service.core.__path__, prefix="service.core."))
FORBIDDEN = [
    "asyncio",
    "litestar",
    "influxdb_client",
    "duckdb",
    "anyio",
    "uvicorn",
    "websockets",
    "service.runtime",
    "service.storage",
    "service.api",
    "service.edge",
    "service.ops",
    "socket",
    "aiohttp",
]


def test_the_core_folder_is_what_the_design_names():
    assert {"models", "errors", "resolution", "bars", "plan", "settings", "timestamps"} <= {
        m.rpartition(".")[2] for m in CORE
    }


def test_core_imports_nothing_impure():
    code = (
        "import sys\n"
        f"for m in {CORE!r}: __import__(m)\n"
        f"bad = sorted({{k for k in sys.modules for f in {FORBIDDEN!r} if k == f or k.startswith(f + '.')}})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"the core imported: {out}"


def _forbidden(module: str) -> bool:
    return any(module == f or module.startswith(f + ".") for f in FORBIDDEN)


def _imported_names(source: str) -> set[str]:
    """Every module an ``import``/``from`` statement anywhere in ``source`` names."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_core_source_names_nothing_impure():
    for name in CORE:
        source = inspect.getsource(__import__(name, fromlist=["_"]))
        bad = sorted(n for n in _imported_names(source) if _forbidden(n))
        assert bad == [], f"{name} imports {bad}"


def test_the_source_check_sees_late_and_typing_only_imports():
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from service.edge.hub import EdgeHub\n"
        "def f():\n    import asyncio\n"
        "from service import runtime\n"
    )
    assert sorted(n for n in _imported_names(source) if _forbidden(n)) == [
        "asyncio",
        "service.edge.hub",
        "service.edge.hub.EdgeHub",
        "service.runtime",
    ]


def test_core_never_reads_the_clock():
    for name in CORE:
        module = __import__(name, fromlist=["_"])
        source = inspect.getsource(module)
        for call in ("time.time(", "time_ns(", "datetime.now(", "monotonic(", "perf_counter("):
            assert call not in source, f"{module.__name__} calls {call}"
