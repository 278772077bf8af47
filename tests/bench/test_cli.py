"""``tvflux-bench``: the benchmarks' own entry point, apart from the product's ``tvflux``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def test_tvflux_bench_lists_the_benchmarks():
    for argv in ([str(BIN / "tvflux-bench"), "--help"], [sys.executable, "-m", "bench", "--help"]):
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert all(c in out.stdout for c in ("history", "backfill", "all"))


def test_the_product_cli_has_no_bench_command():
    out = subprocess.run(
        [str(BIN / "tvflux"), "bench", "history", "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2 and "invalid choice" in out.stderr
