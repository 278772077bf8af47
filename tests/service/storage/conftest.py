"""Fixtures for the storage tests: ``flux_checker`` runs InfluxData's Flux semantic check
(``tests/fluxcheck/check.mjs``, the ``@influxdata/flux-lsp-browser`` wasm) over scripts.

Node and the npm package are needed. Outside CI the Flux tests are skipped with the
reason when they are missing; with ``CI=true`` they fail instead, so CI can never pass
without actually checking the Flux. ``node_modules`` is installed with ``npm ci`` on first
use when missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

FLUXCHECK = Path(__file__).resolve().parents[2] / "fluxcheck"


class FluxCheck(msgspec.Struct, frozen=True):
    ok: bool
    invalid: list[str]
    output: str


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _unavailable(reason: str) -> None:
    if _in_ci():
        pytest.fail(f"Flux checker unavailable in CI: {reason}")
    pytest.skip(f"Flux checker unavailable: {reason}")


@pytest.fixture(scope="session")
def flux_checker() -> Callable[[dict[str, str]], FluxCheck]:
    node = shutil.which("node")
    if node is None:
        _unavailable("`node` is not on PATH (Node 20 is needed)")
    package = FLUXCHECK / "node_modules" / "@influxdata" / "flux-lsp-browser"
    if not package.exists():
        npm = shutil.which("npm")
        if npm is None:
            _unavailable("node_modules missing and `npm` is not on PATH")
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=FLUXCHECK, capture_output=True, text=True, timeout=600
        )
        if done.returncode != 0 or not package.exists():
            _unavailable(f"`npm ci` in {FLUXCHECK} failed:\n{done.stdout}\n{done.stderr}")

    def check(scripts: dict[str, str]) -> FluxCheck:
        done = subprocess.run(
            [node, "check.mjs", "--json"],
            cwd=FLUXCHECK,
            input=json.dumps(scripts),
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode not in (0, 1):
            raise RuntimeError(f"fluxcheck crashed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        invalid = [line.split(" ", 1)[1] for line in done.stdout.splitlines() if line.startswith("INVALID ")]
        checked = sum(1 for line in done.stdout.splitlines() if line.startswith(("ok ", "INVALID ")))
        if checked != len(scripts):
            raise RuntimeError(f"fluxcheck reported {checked} of {len(scripts)} scripts:\n{done.stdout}")
        return FluxCheck(ok=done.returncode == 0 and not invalid, invalid=invalid, output=done.stdout)

    return check
