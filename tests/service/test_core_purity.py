"""The pure core must not import I/O, frameworks or the clock (design: time is passed in)."""

import subprocess
import sys

CORE = ["service.models", "service.resolution", "service.bars", "service.plan", "service.errors",
        "service.settings", "service.timestamps", "service.synthetic"]
FORBIDDEN = ["asyncio", "litestar", "influxdb_client", "duckdb", "anyio", "uvicorn", "websockets",
             "service.clock", "socket", "aiohttp"]


def test_core_imports_nothing_impure():
    code = (
        "import sys\n"
        f"for m in {CORE!r}: __import__(m)\n"
        f"bad = [m for m in {FORBIDDEN!r} if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"the core imported: {out}"


def test_core_never_reads_the_clock():
    import inspect

    import service.bars, service.plan, service.resolution, service.settings, service.synthetic, service.timestamps

    for module in (service.bars, service.plan, service.resolution, service.settings, service.synthetic,
                   service.timestamps):
        source = inspect.getsource(module)
        for call in ("time.time(", "time_ns(", "datetime.now(", "monotonic("):
            assert call not in source, f"{module.__name__} calls {call}"
