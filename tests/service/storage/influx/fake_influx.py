"""A small fake of the InfluxDB 2 HTTP API on 127.0.0.1 (aiohttp), enough to drive
InfluxStore for real over HTTP: ping, orgs, buckets, tasks and manual runs, gzip'd
line-protocol writes (parsed with the reference reader and stored), and answers to the
query *shapes* flux_render builds (parameters are pulled out of the Flux text, results are
computed from the stored points and returned as InfluxDB's CSV).

It executes no Flux: the tasks are not run (a test can hook ``on_run`` to play a task),
and the Flux itself is checked by test_flux.py with InfluxData's own checker.
"""

from __future__ import annotations

import itertools
import re
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tests.service.storage.influx.lp_reader import parse_line

ORG = "tvflux"
TOKEN = "secret-token"
_STR = r'"((?:[^"\\]|\\.)*)"'


def unflux(literal: str) -> str:
    """Undo flux_string's escaping (the inside of a Flux string literal)."""
    return re.sub(r"\\(\$\{|.)", lambda m: {"n": "\n", "r": "\r", "t": "\t"}.get(m.group(1), m.group(1)), literal)


def _csv_field(value: Any) -> str:
    text = repr(value) if isinstance(value, float) else str(value)
    if any(c in text for c in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def csv_tables(tables: list[tuple[list[str], list[list[Any]]]]) -> str:
    """InfluxDB's CSV without annotations: a header per table, blank line between tables."""
    blocks = []
    for i, (columns, rows) in enumerate(tables):
        lines = ["," + ",".join(["result", "table", *columns])]
        lines += ["," + ",".join(["_result", str(i), *(_csv_field(v) for v in row)]) for row in rows]
        blocks.append("\r\n".join(lines) + "\r\n")
    return "\r\n".join(blocks)


class FakeInflux:
    def __init__(self) -> None:
        self.buckets: dict[str, dict[str, Any]] = {}
        self.tasks: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.points: dict[str, list[tuple[str, dict[str, str], dict[str, Any], int]]] = defaultdict(list)
        self.writes: list[dict[str, Any]] = []  # one per write request
        self.queries: list[str] = []
        self.write_failures: list[int] = []  # statuses to answer the next writes with
        self.query_error: str | None = None
        self.run_status = "success"
        self.run_log: list[str] = []
        self.hidden_polls = 0  # answer 404 to this many run look-ups (a queued manual run)
        self.on_run: Callable[[str, dict[str, Any]], None] | None = None
        self.requests: list[tuple[str, str]] = []
        self._ids = itertools.count(1)
        self.runner: web.AppRunner | None = None
        self.url = ""

    # --- lifecycle ---

    async def start(self) -> FakeInflux:
        app = web.Application(middlewares=[self._auth])
        r = app.router
        r.add_get("/ping", self._ping)
        r.add_get("/api/v2/orgs", self._orgs)
        r.add_get("/api/v2/buckets", self._get_buckets)
        r.add_post("/api/v2/buckets", self._post_bucket)
        r.add_patch("/api/v2/buckets/{id}", self._patch_bucket)
        r.add_delete("/api/v2/buckets/{id}", self._delete_bucket)
        r.add_get("/api/v2/tasks", self._get_tasks)
        r.add_post("/api/v2/tasks", self._post_task)
        r.add_patch("/api/v2/tasks/{id}", self._patch_task)
        r.add_delete("/api/v2/tasks/{id}", self._delete_task)
        r.add_post("/api/v2/tasks/{id}/runs", self._post_run)
        r.add_get("/api/v2/tasks/{id}/runs", self._get_runs)
        r.add_get("/api/v2/tasks/{id}/runs/{run}", self._get_run)
        r.add_get("/api/v2/tasks/{id}/runs/{run}/logs", self._get_run_logs)
        r.add_post("/api/v2/write", self._write)
        r.add_post("/api/v2/query", self._query)
        r.add_post("/query", self._influxql)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    @web.middleware
    async def _auth(self, request: web.Request, handler):
        self.requests.append((request.method, request.path))
        if request.path != "/ping" and request.headers.get("Authorization") != f"Token {TOKEN}":
            return web.json_response({"code": "unauthorized", "message": "unauthorized access"}, status=401)
        return await handler(request)

    def _org_ok(self, request: web.Request) -> web.Response | None:
        org = request.query.get("org")
        if org is not None and org != ORG:
            return web.json_response(
                {"code": "not found", "message": f'organization name "{org}" not found'}, status=404
            )
        return None

    # --- orgs, buckets, tasks ---

    async def _ping(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def _orgs(self, request: web.Request) -> web.Response:
        name = request.query.get("org")
        orgs = [{"id": "org1", "name": ORG}] if name in (None, ORG) else []
        if not orgs:
            return web.json_response({"code": "not found", "message": "organization not found"}, status=404)
        return web.json_response({"orgs": orgs})

    async def _get_buckets(self, request: web.Request) -> web.Response:
        if (bad := self._org_ok(request)) is not None:
            return bad
        name = request.query.get("name")
        found = [b for b in self.buckets.values() if name is None or b["name"] == name]
        return web.json_response({"buckets": found})

    async def _post_bucket(self, request: web.Request) -> web.Response:
        body = await request.json()
        bucket = {
            "id": f"b{next(self._ids)}",
            "name": body["name"],
            "orgID": body["orgID"],
            "retentionRules": body.get("retentionRules", []),
        }
        self.buckets[bucket["name"]] = bucket
        return web.json_response(bucket, status=201)

    async def _patch_bucket(self, request: web.Request) -> web.Response:
        body = await request.json()
        for bucket in self.buckets.values():
            if bucket["id"] == request.match_info["id"]:
                bucket["retentionRules"] = body.get("retentionRules", [])
                return web.json_response(bucket)
        return web.json_response({"message": "bucket not found"}, status=404)

    async def _delete_bucket(self, request: web.Request) -> web.Response:
        self.buckets = {n: b for n, b in self.buckets.items() if b["id"] != request.match_info["id"]}
        return web.Response(status=204)

    async def _get_tasks(self, request: web.Request) -> web.Response:
        name = request.query.get("name")
        return web.json_response({"tasks": [t for t in self.tasks.values() if name is None or t["name"] == name]})

    @staticmethod
    def _task_name(flux: str) -> str:
        return unflux(re.search(r"option task = \{name: " + _STR, flux).group(1))

    async def _post_task(self, request: web.Request) -> web.Response:
        body = await request.json()
        task = {
            "id": f"t{next(self._ids)}",
            "orgID": body["orgID"],
            "name": self._task_name(body["flux"]),
            "flux": body["flux"],
            "status": body.get("status", "active"),
        }
        self.tasks[task["id"]] = task
        return web.json_response(task, status=201)

    async def _patch_task(self, request: web.Request) -> web.Response:
        task = self.tasks[request.match_info["id"]]
        task.update({k: v for k, v in (await request.json()).items() if k in ("flux", "status")})
        return web.json_response(task)

    async def _delete_task(self, request: web.Request) -> web.Response:
        self.tasks.pop(request.match_info["id"], None)
        return web.Response(status=204)

    async def _post_run(self, request: web.Request) -> web.Response:
        task_id = request.match_info["id"]
        body = await request.json() if request.can_read_body else {}
        run = {
            "id": f"r{next(self._ids)}",
            "taskID": task_id,
            "status": "scheduled",
            "scheduledFor": body.get("scheduledFor"),
        }
        self.runs[task_id].append(run)
        if self.on_run is not None:
            self.on_run(self.tasks[task_id]["name"], run)
        run["status"] = self.run_status
        run["finishedAt"] = run["scheduledFor"]
        return web.json_response(run, status=201)

    async def _get_runs(self, request: web.Request) -> web.Response:
        return web.json_response({"runs": self.runs[request.match_info["id"]]})

    async def _get_run(self, request: web.Request) -> web.Response:
        if self.hidden_polls > 0:
            self.hidden_polls -= 1
            return web.json_response({"code": "not found", "message": "run not found"}, status=404)
        for run in self.runs[request.match_info["id"]]:
            if run["id"] == request.match_info["run"]:
                return web.json_response(run)
        return web.json_response({"message": "run not found"}, status=404)

    async def _get_run_logs(self, request: web.Request) -> web.Response:
        return web.json_response({"events": [{"time": "2024-01-01T00:00:00Z", "message": m} for m in self.run_log]})

    # --- writes ---

    async def _write(self, request: web.Request) -> web.Response:
        # aiohttp's server inflates a gzip'd body itself (and fails the request if it is not
        # valid gzip), so ``body`` is the line protocol and Content-Length the wire size
        body = await request.read()
        bucket = request.query["bucket"]
        self.writes.append(
            {
                "bucket": bucket,
                "gzip": request.headers.get("Content-Encoding") == "gzip",
                "precision": request.query.get("precision"),
                "lines": body.count(b"\n"),
                "bytes": request.content_length,
            }
        )
        if self.write_failures:
            status = self.write_failures.pop(0)
            return web.json_response({"code": "internal error", "message": f"scripted failure {status}"}, status=status)
        if (bad := self._org_ok(request)) is not None:
            return bad
        if bucket not in self.buckets:
            return web.json_response({"code": "not found", "message": f'bucket "{bucket}" not found'}, status=404)
        for line in body.decode().split("\n"):
            if line:
                self.points[bucket].append(parse_line(line))
        return web.Response(status=204)

    def put(self, bucket: str, payload: bytes) -> None:
        """Store line protocol directly (seeding)."""
        for line in payload.decode().split("\n"):
            if line:
                self.points[bucket].append(parse_line(line))

    # --- queries ---

    async def _query(self, request: web.Request) -> web.Response:
        body = await request.json()
        flux = body["query"]
        self.queries.append(flux)
        assert body["dialect"]["annotations"] == [] and body["dialect"]["header"] is True
        if self.query_error:
            return web.Response(text=f"error,reference\r\n{self.query_error},897\r\n", content_type="text/csv")
        return web.Response(text=csv_tables(self.answer(flux)), content_type="text/csv")

    async def _influxql(self, request: web.Request) -> web.Response:
        """The InfluxQL statements the store sends (``service.storage.influx.influxql``),
        answered as one chunked JSON document."""
        form = await request.post()
        assert form["chunked"] == "true"
        scale = {"ms": 1_000_000, "ns": 1}[str(form["epoch"])]
        results = []
        for i, statement in enumerate(str(form["q"]).split(";\n")):
            self.queries.append(statement)
            if self.query_error:
                results.append({"statement_id": i, "error": self.query_error})
                continue
            columns, values = self._influxql_answer(statement, scale)
            series = [{"name": "x", "columns": columns, "values": values}] if values else []
            results.append({"statement_id": i, "series": series})
        return web.json_response({"results": results})

    def _influxql_answer(self, statement: str, scale: int) -> tuple[list[str], list[list[Any]]]:
        q = r"'((?:[^'\\]|\\.)*)'"
        ident = r'"((?:[^"\\]|\\.)*)"'
        bucket, measurement = (
            re.sub(r"\\(.)", r"\1", g) for g in re.search(f'FROM {ident}\\."autogen"\\.{ident}', statement).groups()
        )
        symbol = re.sub(r"\\(.)", r"\1", re.search(f'"symbol" = {q}', statement).group(1))
        lo_m = re.search(r"time >= (\d+)(ms|ns)", statement)
        hi_m = re.search(r"time < (\d+)(ms|ns)", statement)
        to_ns = {"ms": 1_000_000, "ns": 1}
        lo = int(lo_m.group(1)) * to_ns[lo_m.group(2)] if lo_m else -(2**62)
        hi = int(hi_m.group(1)) * to_ns[hi_m.group(2)]
        last = re.match(r'SELECT last\("(\w+)"\)', statement)
        if last:
            times = [
                t for _, f, _, t in self._series(bucket, measurement, symbol) if f == last.group(1) and lo <= t < hi
            ]
            return ["time", "last"], [[max(times) // scale, 0.0]] if times else []
        every = re.search(r"GROUP BY time\((\d+)ms\)", statement)
        fields = ["open", "high", "low", "close", "volume"]
        rows: dict[int, list[Any]] = defaultdict(lambda: [None] * 5)
        if every:  # raw trades aggregated: the Flux answer's tables, one per field
            for _, table in self._aggregate(bucket, symbol, lo, hi, int(every.group(1)) * 1_000_000):
                for t_text, f, v in table:
                    rows[_parse_rfc3339(t_text)][fields.index(f)] = v
        else:
            for _, f, v, t in self._series(bucket, measurement, symbol):
                if lo <= t < hi and f in fields:
                    rows[t][fields.index(f)] = float(v)
        return ["time", *fields], [[t // scale, *values] for t, values in sorted(rows.items())]

    def _series(self, bucket: str, measurement: str, symbol: str | None = None):
        latest: dict[tuple, tuple] = {}
        for m, tags, fields, t in self.points.get(bucket, []):
            if m != measurement or (symbol is not None and tags.get("symbol") != symbol):
                continue
            for f, v in fields.items():
                latest[(tuple(sorted(tags.items())), f, t)] = (dict(tags), f, v, t)  # same point: overwrite
        return list(latest.values())

    def answer(self, flux: str) -> list[tuple[list[str], list[list[Any]]]]:
        rng = re.search(r"range\(start: time\(v: (-?\d+)\), stop: time\(v: (-?\d+)\)\)", flux)
        symbol_m = re.search(r"r\.symbol == " + _STR, flux)
        symbol = unflux(symbol_m.group(1)) if symbol_m else None
        if flux.startswith("statusBucket = "):
            return self._status_answer(flux)
        if "schema.tagValues" in flux:
            buckets = [unflux(b) for b in re.findall(r"schema\.tagValues\(bucket: " + _STR, flux)]
            values = sorted(
                {tags["symbol"] for b in buckets for _, tags, _, _ in self.points.get(b, []) if "symbol" in tags}
            )
            return [(["v"], [[v] for v in values])]
        if "latest = (bucket, m, field)" in flux:
            before = int(re.search(r"stop: time\(v: (\d+)\)", flux).group(1))
            out = []
            for b, m, f in re.findall(r"latest\(bucket: " + _STR + r", m: " + _STR + r", field: " + _STR, flux):
                times = [
                    t for tags, ff, _, t in self._series(unflux(b), unflux(m), symbol) if ff == unflux(f) and t < before
                ]
                if times:
                    out.append((["t"], [[max(times) // 1_000_000]]))
            return out
        bucket = unflux(re.search(r"from\(bucket: " + _STR, flux).group(1))
        if 'r._field == "id"' in flux:
            wanted = {unflux(v) for v in re.findall(r"r\._value == " + _STR, flux)}
            ids = sorted({v for _, f, v, _ in self._series(bucket, "trades", symbol) if f == "id" and v in wanted})
            return [(["id"], [[i] for i in ids])]
        lo, hi = int(rng.group(1)), int(rng.group(2))
        if "|> last()" in flux:  # last_ts
            times = [t for _, f, _, t in self._series(bucket, "trades", symbol) if f == "price" and lo <= t < hi]
            return [(["t"], [[max(times)]])] if times else []
        if "aggregateWindow" in flux:  # raw trades -> bars
            every_ns = _duration_ns(re.search(r"aggregateWindow\(every: (\w+)", flux).group(1))
            return self._aggregate(bucket, symbol, lo, hi, every_ns)
        measurement = unflux(re.search(r"r\._measurement == " + _STR, flux).group(1))
        rows = defaultdict(list)
        for _, f, v, t in self._series(bucket, measurement, symbol):
            if lo <= t < hi and f in ("open", "high", "low", "close", "volume"):
                rows[f].append([t, f, float(v)])
        return [
            (["_time", "_field", "_value"], [[_rfc3339(t), f, v] for t, f, v in sorted(r)])
            for _, r in sorted(rows.items())
        ]

    def _aggregate(self, bucket: str, symbol: str | None, lo: int, hi: int, every_ns: int):
        trades: dict[int, dict[str, Any]] = defaultdict(dict)
        for _, f, v, t in self._series(bucket, "trades", symbol):
            if lo <= t < hi:
                trades[t][f] = v
        windows: dict[int, list] = {}
        for t in sorted(trades):
            w = t // every_ns * every_ns
            p, s = trades[t]["price"], trades[t]["size"]
            if w not in windows:
                windows[w] = [p, p, p, p, s]
            else:
                bar = windows[w]
                bar[1], bar[2], bar[3], bar[4] = max(bar[1], p), min(bar[2], p), p, bar[4] + s
        tables = []
        for i, name in enumerate(("open", "high", "low", "close", "volume")):
            tables.append(
                (["_time", "_field", "_value"], [[_rfc3339(w), name, bar[i]] for w, bar in sorted(windows.items())])
            )
        return tables

    def _status_answer(self, flux: str):
        """status_query: the latest point of each status series, and per tier the count,
        least start and greatest end of the markers after its cursor."""
        bucket = unflux(re.search(r"statusBucket = " + _STR, flux).group(1))
        best: dict[tuple, list] = {}
        markers: dict[str, list[tuple[int, str, int]]] = defaultdict(list)
        for m, tags, fields, t in self.points.get(bucket, []):
            for f, v in fields.items():
                key = (m, tags.get("tier"), f)
                if m in ("tvflux_watermark", "tvflux_dirty_cursor", "tvflux_run", "tvflux_lease"):
                    if key not in best or t >= best[key][3]:
                        best[key] = [m, tags.get("tier"), f, t, v]
                elif m == "tvflux_dirty":
                    markers[tags.get("tier")].append((t, f, v))
        rows = list(best.values())
        for tier, found in markers.items():
            cursor = best.get(("tvflux_dirty_cursor", tier, "marker_ns"), [0, 0, 0, 0, -1])[4]
            starts = [v for t, f, v in found if f == "start_ms" and t > cursor]
            ends = [v for t, f, v in found if f == "end_ms" and t > cursor]
            if starts:
                rows += [
                    ["tvflux_dirty", tier, "count", 0, len(starts)],
                    ["tvflux_dirty", tier, "start_ms", 0, min(starts)],
                ]
            if ends:
                rows.append(["tvflux_dirty", tier, "end_ms", 0, max(ends)])
        return [(["m", "tier", "f", "t", "v"], rows)]

    def status_point(self, measurement: str, tier: str, field: str, value: int, t_ns: int) -> None:
        self.points.setdefault("tvflux_status", []).append((measurement, {"tier": tier}, {field: value}, t_ns))


def _rfc3339(t_ns: int) -> str:
    """``_time`` as InfluxDB writes it with the RFC3339Nano dialect."""
    import datetime as dt

    whole, frac = divmod(t_ns, 1_000_000_000)
    text = dt.datetime.fromtimestamp(whole, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{frac:09d}".rstrip("0") if frac else "") + "Z"


def _duration_ns(text: str) -> int:
    unit = {"ms": 1_000_000, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": 86400 * 10**9}
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d)", text)
    return int(match.group(1)) * unit[match.group(2)]


def _parse_rfc3339(text: str) -> int:
    import datetime as _dt

    whole, _, frac = text.rstrip("Z").partition(".")
    seconds = int(_dt.datetime.fromisoformat(whole).replace(tzinfo=_dt.UTC).timestamp())
    return seconds * 1_000_000_000 + int((frac + "000000000")[:9])
