"""The pure core must not import I/O, frameworks or the clock (design: time is passed in).

Every module in ``service/core/`` is checked, so a new one is covered without editing a list."""

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


def test_core_never_reads_the_clock():
    for name in CORE:
        module = __import__(name, fromlist=["_"])
        source = inspect.getsource(module)
        for call in ("time.time(", "time_ns(", "datetime.now(", "monotonic(", "perf_counter("):
            assert call not in source, f"{module.__name__} calls {call}"
