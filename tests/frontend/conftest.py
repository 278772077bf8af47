"""Browser fixtures for the frontend suite.

Real parts only: the real service (``fe_server``: ``tvflux serve`` via the harness in
``tests/conftest.py``) and
headless Chromium driven by Playwright for Python. The browser is Debian's
``chromium`` package (``/usr/bin/chromium``, or ``$TVFLUX_CHROMIUM``); Playwright's own
browser download is never used. Without a browser the suite is skipped on a developer's
machine but fails in CI (``CI=true``), so a broken install can't pass as green.

Every page fixture records console errors and uncaught exceptions and fails the test on
teardown if any were not explicitly allowed (``console.allow(regex)``).
"""

from __future__ import annotations

import os
import re
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.conftest import ServerProcess
from tests.frontend.helpers import CHROMIUM_ARGS, SEED_MINUTE_HOURS, bars, find_chromium, seed_trades, seed_window, wait_until


SEED_SYMBOLS = {"BTCUSD": 60_000.0, "ETHUSD": 3_000.0}  # the synthetic source's levels


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _unavailable(reason: str) -> None:
    if _in_ci():
        pytest.fail(f"frontend tests cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = find_chromium()
    if path is None:
        _unavailable("Chromium not found (apt-get install chromium, or set TVFLUX_CHROMIUM)")
    return path  # type: ignore[return-value]


# Module scope, not session: Playwright's sync API keeps an event loop running in the main
# thread until it stops, which would break every asyncio test collected after these.
@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright for Python is not installed (pip install -e '.[test]')")
    pw = sync_playwright().start()
    try:
        b = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        yield b
        b.close()
    finally:
        pw.stop()


@dataclass
class ConsoleLog:
    """Console errors and page exceptions of one test's pages."""

    errors: list[str] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    def allow(self, pattern: str) -> None:
        self.allowed.append(re.compile(pattern))

    def attach(self, page: Any) -> None:
        def on_console(msg: Any) -> None:
            if msg.type != "error":
                return
            where = (msg.location or {}).get("url", "")
            self.errors.append(f"{msg.text} @ {where}")

        page.on("console", on_console)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.allowed)]

    def assert_clean(self) -> None:
        bad = self.unexpected()
        assert not bad, "console errors:\n" + "\n".join(bad)


@pytest.fixture
def console() -> ConsoleLog:
    return ConsoleLog()


@pytest.fixture
def new_page(browser: Any, console: ConsoleLog) -> Iterator[Callable[..., Any]]:
    """Factory for pages in fresh contexts (own localStorage); all checked on teardown."""
    contexts: list[Any] = []

    def make(*, width: int = 1280, height: int = 720, color_scheme: str = "light", timezone_id: str | None = None) -> Any:
        zone = {"timezone_id": timezone_id} if timezone_id else {}  # default: the machine's zone
        ctx = browser.new_context(viewport={"width": width, "height": height}, color_scheme=color_scheme, **zone)
        ctx.set_default_timeout(15_000)
        contexts.append(ctx)
        page = ctx.new_page()
        console.attach(page)
        return page

    yield make
    for ctx in contexts:
        ctx.close()
    console.assert_clean()


@pytest.fixture
def page(new_page: Callable[..., Any]) -> Any:
    return new_page()


# ---- server data ---------------------------------------------------------------


@dataclass(frozen=True)
class Seed:
    start_ms: int  # first seeded trade (the sparse, half-hourly part)
    minute_start_ms: int  # first trade of the dense part (every 15 s)
    end_ms: int  # seeded trades are all before this
    symbols: tuple[str, ...]


@pytest.fixture(scope="session")
def fe_server() -> Iterator[Any]:
    """A real ``tvflux serve`` of the frontend suite's own.

    Not the shared ``tvflux_server``: these tests write (seed history, post trades) and
    stop/restart the server, which tests that only read must not see. Synthetic trades
    keep live updates flowing; a fast downsampling cadence gives the admin page data.
    """
    with tempfile.TemporaryDirectory(prefix="tvflux-frontend-") as data_dir:
        server = ServerProcess(data_dir, {"TVFLUX_SYNTHETIC_RATE": "30", "TVFLUX_DOWNSAMPLE_INTERVAL_MS": "1000"})
        server.start()
        try:
            yield server
        finally:
            server.stop(signal.SIGKILL)


@pytest.fixture(scope="session")
def http(fe_server: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fe_server.base_url, timeout=10.0) as client:
        yield client


@pytest.fixture(scope="session")
def seeded(fe_server: Any, http: httpx.Client) -> Seed:
    """Posts ~40 days of sparse and 12 h of dense history for two symbols, once."""
    window = seed_window(int(time.time() * 1000))
    for symbol, level in SEED_SYMBOLS.items():
        fe_server.post_trades(seed_trades(symbol, level, window), history=True)  # weeks old: bulk history
    # History reads the writer's pending trades too, so this should be immediate; poll
    # anyway so a slow flush can't turn into a flaky assertion later.
    want = SEED_MINUTE_HOURS * 60 - 1
    wait_until(lambda: all(len(bars(http, s, "1", countback=want)) >= want for s in SEED_SYMBOLS), timeout_s=20, what="seeded bars visible")
    return Seed(start_ms=window[0], minute_start_ms=window[1], end_ms=window[2], symbols=tuple(SEED_SYMBOLS))
