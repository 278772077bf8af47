"""``tvflux influx setup|status|render``.

``service/ops/cli.py`` calls :func:`register` with its sub-parsers; every action is a
``(args, settings) -> int`` callable stored as ``func``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from pathlib import Path
from typing import TextIO

from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync

from service.core.errors import StoreUnavailable
from service.core.plan import Plan, default_plan
from service.core.settings import Settings
from service.storage.influx.admin import Admin
from service.storage.influx.flux_render import LEASE_MS, Names, render_all

GENERATED_GLOB = "task_*.flux"


def names_from(settings: Settings) -> Names:
    return Names(settings.influx_bucket, settings.influx_bars_bucket, settings.influx_status_bucket)


def write_flux_dir(directory: Path, plan: Plan | None = None, names: Names = Names()) -> list[str]:
    """Write the rendered tasks of ``plan`` (default plan) into ``directory`` and remove
    task files no longer in the plan. Returns the names of files written or removed."""
    rendered = render_all(plan or default_plan(), names)
    directory.mkdir(parents=True, exist_ok=True)
    changed = []
    for stale in sorted(directory.glob(GENERATED_GLOB)):
        if stale.name not in rendered:
            stale.unlink()
            changed.append(f"removed {stale.name}")
    for name, text in rendered.items():
        path = directory / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(f"wrote {name}")
    return changed


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


async def _setup(settings: Settings, out: TextIO, every_ms: int | None = None, lease_ms: int = LEASE_MS) -> int:
    client = InfluxDBClientAsync(url=settings.influx_url, token=str(settings.influx_token), org=settings.influx_org)
    try:
        admin = Admin(client.api_client, url=settings.influx_url, org=settings.influx_org)
        report = await admin.setup(
            settings.plan, names_from(settings), settings.influx_raw_retention_s, every_ms=every_ms, lease_ms=lease_ms
        )
    finally:
        await client.close()
    for name, action in report.buckets.items():
        print(f"bucket {name}: {action}", file=out)
    for name, action in report.tasks.items():
        print(f"task {name}: {action}", file=out)
    return 0


async def _status(settings: Settings, out: TextIO, runs: int) -> int:
    from service.storage.influx.store import InfluxStore  # the store pulls in more than setup needs

    store = InfluxStore(settings, settings.plan, auto_setup=False)
    await store.start()
    try:
        now_ms = int(dt.datetime.now(tz=dt.UTC).timestamp() * 1000)
        tiers = await store.downsampling_status(now_ms)
        runs_by_tier = await store.task_runs(limit=runs)
        for status in tiers:
            lag = "-" if status.lag_ms is None else f"{status.lag_ms / 1000:.0f}s"
            print(
                f"tier {status.tier:>4} from {status.source:<6} watermark {_when(status.watermark)}  lag {lag}  "
                f"last run {_when(status.last_run)} ({status.rows} bars)  dirty {status.dirty_windows}",
                file=out,
            )
            if status.error:
                print(f"    error: {status.error}", file=out)
            if status.tier not in runs_by_tier:
                print("    task missing: run `tvflux influx setup`", file=out)
                continue
            for run in runs_by_tier[status.tier]:
                print(
                    f"    run {run.id} {run.status:<9} scheduled {_when(run.scheduled_ms)}  finished {_when(run.finished_ms)}",
                    file=out,
                )
                if run.status == "failed":
                    for line in (run.log or await store.run_log(status.tier, run.id))[-3:]:
                        print(f"        {line}", file=out)
    finally:
        await store.close()
    return 0


def cmd_setup(args: argparse.Namespace, settings: Settings) -> int:
    every_ms = None if args.task_every_s is None else int(round(args.task_every_s * 1000))
    if every_ms is not None and every_ms < 1000:
        print("tvflux influx: --task-every-s must be at least 1 (InfluxDB schedules in whole seconds)", file=sys.stderr)
        return 2
    if args.lease_s < 1:
        print("tvflux influx: --lease-s must be at least 1", file=sys.stderr)
        return 2
    return _run(_setup(settings, sys.stdout, every_ms, int(round(args.lease_s * 1000))))


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    return _run(_status(settings, sys.stdout, args.runs))


def cmd_render(args: argparse.Namespace, settings: Settings) -> int:
    directory = Path(args.dir)
    # flux/ in the repository documents the default plan and bucket names; --from-settings
    # renders what *this* deployment would install instead
    if args.from_settings:
        changed = write_flux_dir(directory, settings.plan, names_from(settings))
    else:
        changed = write_flux_dir(directory)
    for line in changed:
        print(line)
    print(f"{directory}: {'up to date' if not changed else f'{len(changed)} file(s) changed'}")
    return 0


def _run(coro) -> int:
    try:
        return asyncio.run(coro)
    except StoreUnavailable as exc:
        print(f"tvflux influx: {exc.message}", file=sys.stderr)
        return 2


def _needs_url(func):
    def run(args: argparse.Namespace, settings: Settings) -> int:
        if not settings.influx_url:
            print("tvflux influx: set TVFLUX_INFLUX_URL (and _TOKEN, _ORG)", file=sys.stderr)
            return 2
        return func(args, settings)

    return run


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``influx {setup,status,render}`` to ``subparsers``."""
    influx = subparsers.add_parser("influx", help="InfluxDB 2 backend: buckets, Flux tasks, status")
    actions = influx.add_subparsers(dest="influx_action", required=True, metavar="ACTION")
    setup = actions.add_parser(
        "setup", help="create the buckets (raw, bars, status) and create or update the downsampling tasks"
    )
    setup.add_argument(
        "--task-every-s",
        type=float,
        default=None,
        metavar="S",
        help="run every task each S seconds instead of the plan's schedule (tests, demos: a fast backfill)",
    )
    setup.add_argument(
        "--lease-s",
        type=float,
        default=LEASE_MS / 1000,
        metavar="S",
        help=f"how long a run that fails or dies keeps its tier locked before the next run retries it "
        f"with half the rows (default {LEASE_MS // 1000}; longer than any run should take)",
    )
    setup.set_defaults(func=_needs_url(cmd_setup))
    status = actions.add_parser("status", help="per tier: watermark, lag, last runs and their errors")
    status.add_argument("--runs", type=int, default=3, help="recent runs to list per task (default 3)")
    status.set_defaults(func=_needs_url(cmd_status))
    render = actions.add_parser("render", help="regenerate the Flux task files in flux/ from the plan")
    render.add_argument("--dir", default="flux", help="output directory (default: flux)")
    render.add_argument(
        "--from-settings",
        action="store_true",
        help="render this deployment's plan and bucket names instead of the defaults",
    )
    render.set_defaults(func=cmd_render)
