"""Buckets and tasks on InfluxDB 2, through the client's generated services (their
``*_async`` methods run on the async client's aiohttp session, so no worker thread is
needed). Shared by :class:`~service.storage.influx.store.InfluxStore` and ``tvflux influx``.

Setup is idempotent: a bucket that exists keeps its data (only the raw bucket's retention
is brought in line), a task whose Flux is unchanged is left alone, a changed one is
updated in place (its run history stays), a missing one is created.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from influxdb_client.domain.bucket_retention_rules import BucketRetentionRules
from influxdb_client.domain.patch_bucket_request import PatchBucketRequest
from influxdb_client.domain.patch_retention_rule import PatchRetentionRule
from influxdb_client.domain.post_bucket_request import PostBucketRequest
from influxdb_client.domain.run_manually import RunManually
from influxdb_client.domain.task_create_request import TaskCreateRequest
from influxdb_client.domain.task_update_request import TaskUpdateRequest
from influxdb_client.rest import ApiException
from influxdb_client.service.buckets_service import BucketsService
from influxdb_client.service.organizations_service import OrganizationsService
from influxdb_client.service.tasks_service import TasksService

from service.core.errors import StoreUnavailable
from service.core.plan import Plan
from service.storage.influx.flux_render import LEASE_MS, Names, render_task
from service.storage.influx.retry import NETWORK_ERRORS, brief

T = TypeVar("T")


class BucketSpec(msgspec.Struct, frozen=True):
    name: str
    retention_s: int  # 0 keeps data forever
    description: str
    # only the raw bucket's retention is ours to enforce; an operator may give the others one
    manage_retention: bool = False


class SetupReport(msgspec.Struct, frozen=True):
    org_id: str
    buckets: dict[str, str]  # name -> "created" | "exists" | "retention updated"
    tasks: dict[str, str]  # task name -> "created" | "updated" | "unchanged"
    task_ids: dict[str, str]  # tier -> task id


class RunInfo(msgspec.Struct, frozen=True):
    id: str
    status: str  # scheduled | started | success | failed | canceled
    scheduled_ms: int | None
    started_ms: int | None
    finished_ms: int | None
    log: list[str]


def bucket_specs(names: Names, raw_retention_s: int) -> list[BucketSpec]:
    return [
        BucketSpec(names.raw_bucket, raw_retention_s, "tvflux raw trades", manage_retention=True),
        BucketSpec(names.bars_bucket, 0, "tvflux bars, one measurement per tier"),
        # watermarks must outlive any idle period: no retention
        BucketSpec(names.status_bucket, 0, "tvflux downsampling watermarks, leases, dirty windows"),
    ]


def describe_api_error(exc: ApiException, what: str, *, url: str, org: str) -> str:
    """One clear sentence for an HTTP failure talking to InfluxDB."""
    status = getattr(exc, "status", None)
    message = getattr(exc, "message", None) or getattr(exc, "reason", None) or str(exc)
    if status == 401:
        return f"InfluxDB at {url} rejected the token ({what}: 401 unauthorized) — check TVFLUX_INFLUX_TOKEN"
    if status == 403:
        return f"the token may not {what} in org {org!r} at {url} (403 forbidden) — use a token with that permission"
    if status == 404:
        return f"{what}: not found in org {org!r} at {url} ({message}) — check TVFLUX_INFLUX_ORG and run `tvflux influx setup`"
    return f"{what} failed at {url}: HTTP {status} {message}"


def _ms(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return int(value.timestamp() * 1000)
    return None


def _guard(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Turn a lost connection into :class:`StoreUnavailable` (HTTP errors are handled,
    with their specifics, inside each method)."""

    @functools.wraps(method)
    async def wrapper(self: Admin, *args: Any, **kwargs: Any) -> T:
        try:
            return await method(self, *args, **kwargs)
        except NETWORK_ERRORS as exc:
            raise StoreUnavailable(f"InfluxDB at {self.url} is unreachable: {brief(exc)}") from None

    return wrapper


class Admin:
    """Bucket and task management for one org, on an async client's ``api_client``.
    Every public method raises :class:`StoreUnavailable` with a clear message on failure."""

    def __init__(self, api_client: Any, *, url: str, org: str) -> None:
        self.url = url
        self.org = org
        self._orgs = OrganizationsService(api_client)
        self._buckets = BucketsService(api_client)
        self._tasks = TasksService(api_client)
        self._org_id: str | None = None

    def _fail(self, exc: ApiException, what: str) -> StoreUnavailable:
        return StoreUnavailable(describe_api_error(exc, what, url=self.url, org=self.org))

    @_guard
    async def org_id(self) -> str:
        if self._org_id is None:
            try:
                found = await self._orgs.get_orgs_async(org=self.org)
            except ApiException as exc:
                raise self._fail(exc, f"look up organization {self.org!r}") from None
            orgs = [o for o in (found.orgs or []) if o.name == self.org]
            if not orgs:
                raise StoreUnavailable(
                    f"organization {self.org!r} does not exist at {self.url} — check TVFLUX_INFLUX_ORG"
                )
            self._org_id = orgs[0].id
        return self._org_id

    @_guard
    async def find_bucket(self, name: str) -> Any | None:
        try:
            found = await self._buckets.get_buckets_async(org=self.org, name=name)
        except ApiException as exc:
            if exc.status == 404:
                # OSS answers 404 for an unknown org *and* (on some versions) an unknown name
                message = str(getattr(exc, "message", "") or "")
                if "organization" in message.lower():
                    raise self._fail(exc, f"look up bucket {name!r}") from None
                return None
            raise self._fail(exc, f"look up bucket {name!r}") from None
        matches = [b for b in (found.buckets or []) if b.name == name]
        return matches[0] if matches else None

    @_guard
    async def missing_buckets(self, specs: list[BucketSpec]) -> list[str]:
        return [s.name for s in specs if await self.find_bucket(s.name) is None]

    @_guard
    async def ensure_buckets(self, specs: list[BucketSpec]) -> dict[str, str]:
        org_id = await self.org_id()
        result: dict[str, str] = {}
        for spec in specs:
            rules = [BucketRetentionRules(type="expire", every_seconds=spec.retention_s)] if spec.retention_s else []
            bucket = await self.find_bucket(spec.name)
            if bucket is None:
                request = PostBucketRequest(
                    org_id=org_id, name=spec.name, description=spec.description, retention_rules=rules
                )
                try:
                    await self._buckets.post_buckets_async(request)
                except ApiException as exc:
                    if exc.status == 422 or exc.status == 409:  # created meanwhile by someone else
                        result[spec.name] = "exists"
                        continue
                    raise self._fail(exc, f"create bucket {spec.name!r}") from None
                result[spec.name] = "created"
                continue
            current = 0
            for rule in bucket.retention_rules or []:
                current = rule.every_seconds or 0
            if spec.manage_retention and current != spec.retention_s:
                patch_rules = (
                    [PatchRetentionRule(type="expire", every_seconds=spec.retention_s)] if spec.retention_s else []
                )
                try:
                    await self._buckets.patch_buckets_id_async(
                        bucket.id, PatchBucketRequest(retention_rules=patch_rules)
                    )
                except ApiException as exc:
                    raise self._fail(exc, f"update the retention of bucket {spec.name!r}") from None
                result[spec.name] = "retention updated"
            else:
                result[spec.name] = "exists"
        return result

    @_guard
    async def find_task(self, name: str) -> Any | None:
        try:
            found = await self._tasks.get_tasks_async(name=name, org=self.org)
        except ApiException as exc:
            raise self._fail(exc, f"list tasks named {name!r}") from None
        matches = [t for t in (found.tasks or []) if t.name == name]
        return matches[0] if matches else None

    @_guard
    async def ensure_tasks(
        self,
        plan: Plan,
        names: Names,
        *,
        scheduled: bool = True,
        every_ms: int | None = None,
        lease_ms: int = LEASE_MS,
    ) -> tuple[dict[str, str], dict[str, str]]:
        """Create or update one task per tier. Returns (name -> action, tier -> task id)."""
        org_id = await self.org_id()
        actions: dict[str, str] = {}
        ids: dict[str, str] = {}
        for tier in plan.tiers:
            name = names.task_name(tier)
            flux = render_task(plan, tier, names, scheduled=scheduled, every_ms=every_ms, lease_ms=lease_ms)
            task = await self.find_task(name)
            try:
                if task is None:
                    task = await self._tasks.post_tasks_async(
                        TaskCreateRequest(
                            org_id=org_id, flux=flux, status="active", description=f"tvflux bars {tier.name}"
                        )
                    )
                    actions[name] = "created"
                elif task.flux != flux or task.status != "active":
                    task = await self._tasks.patch_tasks_id_async(
                        task.id, TaskUpdateRequest(flux=flux, status="active")
                    )
                    actions[name] = "updated"
                else:
                    actions[name] = "unchanged"
            except ApiException as exc:
                raise self._fail(exc, f"create or update task {name!r}") from None
            ids[tier.name] = task.id
        return actions, ids

    @_guard
    async def task_ids(self, plan: Plan, names: Names) -> dict[str, str]:
        """tier -> task id for the tasks that exist."""
        out = {}
        for tier in plan.tiers:
            task = await self.find_task(names.task_name(tier))
            if task is not None:
                out[tier.name] = task.id
        return out

    @_guard
    async def setup(
        self,
        plan: Plan,
        names: Names,
        raw_retention_s: int,
        *,
        scheduled: bool = True,
        every_ms: int | None = None,
        lease_ms: int = LEASE_MS,
    ) -> SetupReport:
        buckets = await self.ensure_buckets(bucket_specs(names, raw_retention_s))
        tasks, ids = await self.ensure_tasks(plan, names, scheduled=scheduled, every_ms=every_ms, lease_ms=lease_ms)
        return SetupReport(org_id=await self.org_id(), buckets=buckets, tasks=tasks, task_ids=ids)

    @_guard
    async def delete(self, plan: Plan, names: Names) -> None:
        """Remove this deployment's tasks and buckets (for tests and teardown)."""
        for tier in plan.tiers:
            task = await self.find_task(names.task_name(tier))
            if task is not None:
                await self._tasks.delete_tasks_id_async(task.id)
        for bucket_name in (names.raw_bucket, names.bars_bucket, names.status_bucket):
            bucket = await self.find_bucket(bucket_name)
            if bucket is not None:
                await self._buckets.delete_buckets_id_async(bucket.id)

    # --- runs -------------------------------------------------------------------

    @_guard
    async def start_run(self, task_id: str, scheduled_for_s: int | None) -> str | None:
        """Ask for a manual run (POST /api/v2/tasks/{id}/runs); ``scheduled_for_s`` (whole
        seconds: InfluxDB keeps no more) becomes the run's ``now()``. Returns ``None`` when
        a run for that instant is already queued (InfluxDB refuses a second one)."""
        when = None
        if scheduled_for_s is not None:
            when = dt.datetime.fromtimestamp(scheduled_for_s, tz=dt.UTC)
        try:
            run = await self._tasks.post_tasks_id_runs_async(task_id, run_manually=RunManually(scheduled_for=when))
        except ApiException as exc:
            if "already queued" in str(getattr(exc, "message", "") or ""):
                return None
            raise self._fail(exc, f"start a run of task {task_id}") from None
        run_id: str = run.id
        return run_id

    @_guard
    async def run_info(self, task_id: str, run_id: str) -> RunInfo | None:
        """The run, or ``None`` while InfluxDB does not show it yet (a queued manual run
        may not be listed until the scheduler has taken it)."""
        try:
            run = await self._tasks.get_tasks_id_runs_id_async(task_id, run_id)
        except ApiException as exc:
            if exc.status == 404:
                return None
            if exc.status is not None and exc.status >= 500:
                raise _ServerError(describe_api_error(exc, f"read run {run_id}", url=self.url, org=self.org)) from None
            raise self._fail(exc, f"read run {run_id} of task {task_id}") from None
        return _run_info(run)

    @_guard
    async def wait_run(self, task_id: str, run_id: str, *, timeout_s: float, poll_s: float = 0.2) -> RunInfo:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        server_errors = 0
        while True:
            try:
                info = await self.run_info(task_id, run_id)
                server_errors = 0
            except _ServerError:
                # InfluxDB 2.9.1 can answer a read of a run that is finishing at that very
                # moment with HTTP 500 (a panic in its run storage); the next read succeeds.
                # Anything lasting longer than a few polls is a real failure.
                server_errors += 1
                if server_errors > 10:
                    raise
                info = None
            if info is not None and info.status in ("success", "failed", "canceled"):
                if info.status == "failed" and not info.log:
                    info = msgspec.structs.replace(info, log=await self.run_log(task_id, run_id))
                return info
            if loop.time() >= deadline:
                status = "not visible" if info is None else info.status
                return RunInfo(run_id, f"timed out ({status} after {timeout_s:.0f}s)", None, None, None, [])
            await asyncio.sleep(poll_s)

    @_guard
    async def run_log(self, task_id: str, run_id: str) -> list[str]:
        try:
            logs = await self._tasks.get_tasks_id_runs_id_logs_async(task_id, run_id)
        except ApiException:
            return []
        return [e.message for e in (logs.events or []) if e.message]

    @_guard
    async def recent_runs(self, task_id: str, limit: int = 5) -> list[RunInfo]:
        """The latest ``limit`` runs, newest first."""
        try:
            runs = await self._tasks.get_tasks_id_runs_async(task_id, limit=100)
        except ApiException as exc:
            raise self._fail(exc, f"list runs of task {task_id}") from None
        infos = [_run_info(r) for r in (runs.runs or [])]
        infos.sort(key=lambda r: r.scheduled_ms or r.started_ms or 0, reverse=True)
        return infos[:limit]


class _ServerError(StoreUnavailable):
    """InfluxDB answered 5xx."""


def _run_info(run: Any) -> RunInfo:
    log = [e.message for e in (getattr(run, "log", None) or []) if getattr(e, "message", None)]
    return RunInfo(
        id=run.id,
        status=str(run.status),
        scheduled_ms=_ms(run.scheduled_for),
        started_ms=_ms(run.started_at),
        finished_ms=_ms(run.finished_at),
        log=log,
    )
