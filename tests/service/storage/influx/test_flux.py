"""Flux: flux/ is what the renderer makes of the default plan; every task and every query
shape passes InfluxData's semantic check; the tasks' window arithmetic is exactly
Plan.next_window (evaluated with a small interpreter for the arithmetic subset of Flux)."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from service.core.plan import RAW, Plan, Tier, build_plan, default_plan
from service.core.resolution import DAY_MS, HOUR_MS, MINUTE_MS
from service.ops.influx_cli import write_flux_dir
from service.storage.influx import flux_queries as fq
from service.storage.influx import flux_render as fr

ROOT = Path(__file__).resolve().parents[4]
FLUX_DIR = ROOT / "flux"
CUSTOM = build_plan(["1m", "1h"], lookback_ms=2 * MINUTE_MS, grace_ms=1_500)
ODD_NAMES = fr.Names(raw_bucket='raw "ticks"', bars_bucket="bars ${x}", status_bucket="st\\atus")


# --- flux/ in sync ------------------------------------------------------------------


def test_flux_dir_matches_the_default_plan() -> None:
    rendered = fr.render_all(default_plan())
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in FLUX_DIR.glob("*.flux")}
    assert sorted(on_disk) == sorted(rendered), "flux/ has other files than the plan: run `tvflux influx render`"
    for name, text in rendered.items():
        assert on_disk[name] == text, f"flux/{name} is out of date: run `tvflux influx render`"


def test_render_command_writes_removes_and_is_idempotent(tmp_path: Path) -> None:
    (tmp_path / "task_2m.flux").write_text("stale")
    (tmp_path / "README.md").write_text("kept")
    first = write_flux_dir(tmp_path, CUSTOM)
    assert "removed task_2m.flux" in first and "wrote task_1h.flux" in first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "task_1h.flux", "task_1m.flux"]
    assert write_flux_dir(tmp_path, CUSTOM) == []


# --- InfluxData's semantic check ----------------------------------------------------


def test_every_file_in_flux_dir_passes_the_flux_checker(flux_checker) -> None:
    files = {p.name: p.read_text(encoding="utf-8") for p in sorted(FLUX_DIR.glob("*.flux"))}
    assert len(files) == len(default_plan().tiers)
    result = flux_checker(files)
    assert result.ok, result.output


@pytest.mark.parametrize("plan", [default_plan(), CUSTOM], ids=["default", "1m-1h"])
@pytest.mark.parametrize("names", [fr.Names(), ODD_NAMES], ids=["default-names", "odd-names"])
def test_tasks_and_queries_pass_the_flux_checker(flux_checker, plan: Plan, names: fr.Names) -> None:
    scripts = {f"task {t.name}": fr.render_task(plan, t, names) for t in plan.tiers}
    scripts.update({f"manual task {t.name}": fr.render_task(plan, t, names, scheduled=False) for t in plan.tiers})
    scripts.update({f"1s task {t.name}": fr.render_task(plan, t, names, every_ms=1_000) for t in plan.tiers})
    scripts.update({f"query {k}": v for k, v in fq.all_queries(plan, names).items()})
    result = flux_checker(scripts)
    assert result.ok, result.output


def test_the_checker_rejects_broken_flux(flux_checker) -> None:
    task = fr.render_task(default_plan(), default_plan().tiers[1])
    broken = {
        "type error": task.replace("value: 0, when: working", 'value: "0", when: working'),
        "unknown aggregate": task.replace("agg: first", "agg: firstt"),
        "bad argument": task.replace("|> to(bucket: barsBucket)", "|> to(bukket: barsBucket)"),
        "syntax": 'from(bucket: "b" |> range(start: -1h)',
        "empty": "",
    }
    result = flux_checker({"fine": task, **broken})
    assert not result.ok
    assert sorted(result.invalid) == sorted(broken)
    assert "undefined identifier firstt" in result.output
    assert "expected int but found string" in result.output


# --- what the tasks say (no Node needed) --------------------------------------------


@pytest.mark.parametrize("tier", default_plan().tiers, ids=lambda t: t.name)
def test_task_shape(tier: Tier) -> None:
    plan = default_plan()
    text = fr.render_task(plan, tier)
    assert "lastSuccess" not in text.replace("tasks.lastSuccess()", "")  # only named in a comment
    assert 'import "influxdata/influxdb/tasks"' not in text
    # one from() per aggregate and pass, each pushed down as from |> range |> filter |> aggregateWindow
    assert text.count("aggregate(start:") == 12
    assert 'aggregateWindow(every: tierEvery, fn: agg, timeSrc: "_start", createEmpty: false)' in text
    assert f"tierEvery = {fr.flux_duration(tier.size_ms)}\n" in text
    assert f"chunkNs = {tier.chunk_ms * 1_000_000}\n" in text
    assert f"spanNs = {tier.task_span_ms * 1_000_000}\nprobeNs = {tier.probe_ms * 1_000_000}\n" in text
    assert f"runRows = {plan.run_rows}\n" in text
    assert f"lookbackNs = {plan.lookback_ms * 1_000_000}\n" in text
    assert f"graceNs = {plan.grace_ms * 1_000_000}\n" in text
    assert f'target = "bars_{tier.name}"' in text
    if tier.source == RAW:
        assert 'sourceMeasurement = "trades"' in text and 'sourceBucket = "trades"' in text
        assert 'agg: count, as: "trades"' in text and 'field: "size", agg: sum, as: "volume"' in text
    else:
        assert f'sourceMeasurement = "bars_{tier.source}"' in text
        assert f'tierName: "{tier.source}")' in text  # reads the source's watermark
        assert 'field: "trades", agg: sum, as: "trades"' in text
    for dep in plan.dependents(tier.name):
        assert (
            f'marker(tierName: "{dep.name}", at: time(v: wallMs * msNs), start: dirtyStartNs' in text
        )  # passes spans up
    every = fr.flux_duration(fr.task_every_ms(tier))
    assert f'option task = {{name: "tvflux-bars-{tier.name}", every: {every}, offset: ' in text
    manual = fr.render_task(plan, tier, scheduled=False)
    assert f'cron: "{fr.MANUAL_CRON}"' in manual and "every:" not in manual.split("option task")[1].split("\n")[0]
    fast = fr.render_task(plan, tier, every_ms=1_000)  # the test-only schedule of `setup --task-every-s`
    assert f'option task = {{name: "tvflux-bars-{tier.name}", every: 1s}}' in fast
    assert fast.split("option task")[1].split("\n", 1)[1] == text.split("option task")[1].split("\n", 1)[1]


def test_the_watermark_is_written_only_downstream_of_the_bar_writes() -> None:
    text = fr.render_task(default_plan(), default_plan().tiers[0])
    written = text.index("written = union(")
    assert text.index('field: "watermark_ms", value: normalEndNs') > written
    assert "point = (measurement, tierName, field, value, when) => written" in text
    assert text.rstrip().endswith("|> to(bucket: statusBucket)")


@pytest.mark.parametrize("tier", default_plan().tiers, ids=lambda t: t.name)
def test_a_first_run_reads_the_markers_before_the_earliest_source_row(tier: Tier) -> None:
    """Flux runs each findColumn() where it stands. A first run (no watermark) consumes the
    markers without rebuilding anything: the backfill from the earliest source row must
    then see every trade a consumed marker points at. Trades land before their marker, so
    that holds only if the markers are read first. (Reading them after, CI once lost the
    first three days of an append that was still landing when the first run began.)"""
    text = fr.render_task(default_plan(), tier)
    assert text.index("\nnewest = ") < text.index("\ndirtyFrom = ") < text.index("\nearliestNs = ")
    assert text.index("\nearliestNs = ") < text.index("\ncrossing = ") < text.index("\nwritten = union(")


def test_task_schedule() -> None:
    plan = default_plan()
    assert [fr.flux_duration(fr.task_every_ms(t)) for t in plan.tiers] == ["10s", "50s", "1m", "1m", "1m", "1m"]
    offsets = [fr.task_offset_ms(plan, t) for t in plan.tiers]
    assert offsets == sorted(offsets) and all(o < fr.task_every_ms(t) for o, t in zip(offsets, plan.tiers))


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (1, "1ms"),
        (1_500, "1500ms"),
        (5_000, "5s"),
        (60_000, "1m"),
        (90_000, "90s"),
        (HOUR_MS, "1h"),
        (4 * HOUR_MS, "4h"),
        (DAY_MS, "1d"),
        (90 * DAY_MS, "90d"),
    ],
)
def test_flux_duration(ms: int, text: str) -> None:
    assert fr.flux_duration(ms) == text


@pytest.mark.parametrize(
    ("raw", "literal"),
    [
        ("BTCUSD", '"BTCUSD"'),
        ('a"b', '"a\\"b"'),
        ("a\\b", '"a\\\\b"'),
        ("${x}", '"\\${x}"'),
        ("$x", '"$x"'),
        ("a\nb", '"a\\nb"'),
    ],
)
def test_flux_string(raw: str, literal: str) -> None:
    assert fr.flux_string(raw) == literal


def test_query_builders_use_the_right_series_and_ranges() -> None:
    names = fr.Names()
    q = fq.tier_bars_query(names, "15m", "ETHUSD", 1_000, 2_000)
    assert 'from(bucket: "bars")' in q and 'r._measurement == "bars_15m"' in q and 'r.symbol == "ETHUSD"' in q
    assert "range(start: time(v: 1000000000), stop: time(v: 2000000000))" in q
    q = fq.raw_bars_query(names, "ETHUSD", 0, 60_000, 5_000)
    assert q.count("agg(field:") == 5 and "aggregateWindow(every: 5s, fn: fn" in q
    q = fq.known_ids_query(names, "X", ["a", "b"])
    assert 'r._value == "a" or r._value == "b"' in q
    with pytest.raises(ValueError):
        fq.known_ids_query(names, "X", [])


# --- the window arithmetic of the tasks, evaluated ------------------------------------


class MiniFlux:
    """Evaluates the integer/boolean expression subset of Flux the tasks compute windows
    with: if/then/else, and/or, comparisons, + - * / (Go integer division), unary minus,
    calls with named arguments, lambdas ``(a, b) => expr``, ``x[0]``."""

    TOKEN = re.compile(r"\s*(=>|<=|>=|==|!=|-?\b\d+\b|[A-Za-z_][A-Za-z0-9_]*|[-+*/<>()\[\],:])")

    def __init__(self, env: dict) -> None:
        self.env = dict(env)

    def run(self, statement: str) -> None:
        name, expr = statement.split(" = ", 1)
        self.env[name.strip()] = self.eval(expr, self.env)

    def eval(self, text: str, env: dict):
        self.tokens = [t for t in self.TOKEN.findall(text)]
        assert "".join(self.tokens) == re.sub(r"\s+", "", text), f"cannot tokenize {text!r}"
        self.pos = 0
        self.scope = env
        fn = self.expr()
        assert self.pos == len(self.tokens), self.tokens[self.pos :]
        return fn(env)

    def peek(self):
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, want=None):
        tok = self.tokens[self.pos]
        assert want is None or tok == want, (want, tok, self.tokens)
        self.pos += 1
        return tok

    def expr(self):
        if self.peek() == "(" and self._is_lambda():
            self.take("(")
            params = []
            while self.peek() != ")":
                params.append(self.take())
                if self.peek() == ",":
                    self.take(",")
            self.take(")")
            self.take("=>")
            body = self.expr()
            return lambda env: lambda **kw: body({**env, **kw})
        if self.peek() == "if":
            self.take("if")
            cond = self.expr()
            self.take("then")
            yes = self.expr()
            self.take("else")
            no = self.expr()
            return lambda env: yes(env) if cond(env) else no(env)
        return self.binary(0)

    def _is_lambda(self) -> bool:
        depth = 0
        for i in range(self.pos, len(self.tokens)):
            depth += {"(": 1, ")": -1}.get(self.tokens[i], 0)
            if depth == 0:
                return i + 1 < len(self.tokens) and self.tokens[i + 1] == "=>"
        return False

    LEVELS = [("or",), ("and",), ("<", "<=", ">", ">=", "==", "!="), ("+", "-"), ("*", "/")]

    def binary(self, level: int):
        if level == len(self.LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while self.peek() in self.LEVELS[level]:
            op = self.take()
            right = self.binary(level + 1)
            left = self._apply(op, left, right)
        return left

    @staticmethod
    def _apply(op, left, right):
        def div(a, b):
            q = abs(a) // abs(b)
            return q if (a >= 0) == (b > 0) else -q

        ops = {
            "or": lambda e: left(e) or right(e),
            "and": lambda e: left(e) and right(e),
            "<": lambda e: left(e) < right(e),
            "<=": lambda e: left(e) <= right(e),
            ">": lambda e: left(e) > right(e),
            ">=": lambda e: left(e) >= right(e),
            "==": lambda e: left(e) == right(e),
            "!=": lambda e: left(e) != right(e),
            "+": lambda e: left(e) + right(e),
            "-": lambda e: left(e) - right(e),
            "*": lambda e: left(e) * right(e),
            "/": lambda e: div(left(e), right(e)),
        }
        return ops[op]

    def unary(self):
        if self.peek() == "-":
            self.take("-")
            inner = self.unary()
            return lambda env: -inner(env)
        return self.postfix()

    def postfix(self):
        node = self.atom()
        while self.peek() in ("(", "["):
            if self.take() == "[":
                index = self.expr()
                self.take("]")
                node = (lambda n, i: lambda env: n(env)[i(env)])(node, index)
                continue
            args = {}
            while self.peek() != ")":
                key = self.take()
                self.take(":")
                args[key] = self.expr()
                if self.peek() == ",":
                    self.take(",")
            self.take(")")
            node = (lambda n, a: lambda env: n(env)(**{k: v(env) for k, v in a.items()}))(node, args)
        return node

    def atom(self):
        tok = self.take()
        if tok == "(":
            inner = self.expr()
            self.take(")")
            return inner
        if re.fullmatch(r"-?\d+", tok):
            return lambda env: int(tok)
        if tok in ("true", "false"):
            return lambda env: tok == "true"
        return lambda env: env[tok]


def statements(text: str, names: list[str]) -> list[str]:
    found = []
    for name in names:
        match = re.search(rf"^{name} = (.+)$", text, re.MULTILINE)
        assert match, name
        found.append(f"{name} = {match.group(1)}")
    return found


def flux_env(text: str) -> MiniFlux:
    consts = {}
    for name in ("sizeNs", "chunkNs", "spanNs", "probeNs", "lookbackNs", "graceNs", "msNs"):
        consts[name] = int(re.search(rf"^{name} = (\d+)$", text, re.MULTILINE).group(1))
    interp = MiniFlux({**consts, "length": lambda arr: len(arr), "int": lambda v: int(v)})
    for stmt in statements(text, ["floorNs", "ceilNs", "minInt", "maxInt"]):
        interp.run(stmt)
    return interp


def flux_window(
    plan: Plan, tier: Tier, wm, src, earliest_ns, now_ms, crossing_ms=None, next_row_ns=None, last_row_ns=None
):
    """The task's normal window; ``crossing_ms``: what its row count finds (the start of
    the probe window where the source rows pass the plan's budget), ``None`` for none;
    ``next_row_ns``/``last_row_ns``: what its first()/last() find (the first and the last
    source row from the window's start to the limit)."""
    text = fr.render_task(plan, tier)
    interp = flux_env(text)
    interp.env.update(
        wmMs=-1 if wm is None else wm,
        sourceWmMs=-1 if src is None else src,
        nowNs=now_ms * 1_000_000,
        leaseFree=True,
        earliestSourceNs=lambda: -1 if earliest_ns is None else earliest_ns,
        crossing=[] if crossing_ms is None else [crossing_ms * 1_000_000],
        nextRow=[] if next_row_ns is None else [next_row_ns],
        lastRow=[] if last_row_ns is None else [last_row_ns],
    )
    names = ["edgeNs", "limitNs", "earliestNs", "normalStartNs", "spanEndNs", "hasNormal", "nextRowNs", "lastRowNs"]
    names += ["leastEndNs", "sizedEndNs", "skipToNs", "normalEndNs"]
    for stmt in statements(text, names):
        interp.run(stmt)
    env = interp.env
    if not env["hasNormal"]:
        return None
    assert env["normalStartNs"] % 1_000_000 == 0 and env["normalEndNs"] % 1_000_000 == 0
    return env["normalStartNs"] // 1_000_000, env["normalEndNs"] // 1_000_000


def window_cases(tier: Tier, rng: random.Random):
    base = 1_700_000_000_000 + rng.randrange(0, 10 * DAY_MS)
    for _ in range(80):
        # now often just past a bar boundary, where the grace decides whether the bar closes
        now = rng.choice([base, tier.floor(base) + rng.randrange(0, 10_000)])
        wm = rng.choice(
            [None, tier.floor(now - rng.randrange(0, 200 * DAY_MS)), tier.floor(now), tier.floor(now) + tier.size_ms]
        )
        src = None if tier.source == RAW else rng.choice([None, tier.floor(now - rng.randrange(0, 3 * DAY_MS)), now])
        earliest_ms = rng.choice(
            [None, now - rng.randrange(0, 400 * DAY_MS), now - rng.randrange(0, tier.size_ms), now + 10]
        )
        yield wm, src, earliest_ms, now


@pytest.mark.parametrize("plan", [default_plan(), CUSTOM], ids=["default", "1m-1h"])
def test_task_windows_are_exactly_plan_next_window(plan: Plan) -> None:
    rng = random.Random(11)
    checked = 0
    for tier in plan.tiers:
        for wm, src, earliest_ms, now in window_cases(tier, rng):
            if src is not None and wm is not None and wm > src:
                continue  # not a reachable state: a watermark never passes its source's
            earliest_ns = None if earliest_ms is None else earliest_ms * 1_000_000 + 123
            want = plan.next_window(
                tier,
                watermark_ms=wm,
                source_watermark_ms=src,
                earliest_ms=earliest_ms,
                now_ms=now,
                span_ms=tier.task_span_ms,
            )
            # the row count's answer: no crossing, or the start of a probe window in the
            # window (clipped to its start, as aggregateWindow reports the first one)
            crossing = next_row = last_row = None
            limit = plan.edge_ms(tier, source_watermark_ms=src, now_ms=now)
            if want is not None:
                probe = tier.probe_ms
                if rng.random() < 0.6:
                    crossing = max(want.start_ms, rng.randrange(want.start_ms, want.end_ms) // probe * probe)
                # the first row: in the window, past it (a gap to skip), or none before the limit
                next_row = rng.choice(
                    [
                        want.start_ms,
                        rng.randrange(want.start_ms, want.end_ms),
                        rng.randrange(want.end_ms, limit + 1),
                        None,
                    ]
                )
                if next_row is not None and next_row >= limit:
                    next_row = None
                if next_row is not None:
                    last_row = rng.choice([next_row, rng.randrange(next_row, limit)])
            next_row_ns = None if next_row is None else next_row * 1_000_000 + 7
            last_row_ns = None if last_row is None else last_row * 1_000_000 + 9
            got = flux_window(plan, tier, wm, src, earliest_ns, now, crossing, next_row_ns, last_row_ns)
            expected = None
            if want is not None:
                end = plan.sized_end_ms(
                    tier,
                    want,
                    watermark_ms=wm,
                    limit_ms=limit,
                    crossing_ms=crossing,
                    next_row_ms=next_row,
                    last_row_ms=last_row,
                )
                expected = (want.start_ms, end)
                assert want.start_ms < end <= limit and end > (wm if wm is not None else -1)  # progress, always
            assert got == expected, (tier.name, wm, src, earliest_ms, now, crossing)
            checked += 1
    assert checked > 100


def dirty_expected(tier: Tier, wm, lo_ms, hi_ms):
    if wm is None or lo_ms is None:
        return None
    start = tier.floor(lo_ms)
    limit = min(-tier.floor(-hi_ms), wm)
    end = min(limit, start + tier.chunk_ms)
    if end <= start:
        return None
    return start, end, (end, limit) if limit > end else None


@pytest.mark.parametrize("tier", default_plan().tiers, ids=lambda t: t.name)
def test_task_dirty_windows_cover_marked_spans_below_the_watermark(tier: Tier) -> None:
    text = fr.render_task(default_plan(), tier)
    rng = random.Random(3)
    now = 1_700_000_000_000
    for _ in range(80):
        wm = rng.choice([None, tier.floor(now - rng.randrange(0, 400 * DAY_MS))])
        lo = rng.choice([None, now - rng.randrange(0, 500 * DAY_MS)])
        hi = None if lo is None else lo + rng.choice([1, MINUTE_MS, 3 * DAY_MS, 200 * DAY_MS])
        interp = flux_env(text)
        interp.env.update(
            wmMs=-1 if wm is None else wm,
            leaseFree=True,
            cursorNs=-1,
            newest=[] if lo is None else [now * 1_000_000],
            dirtyFrom=[] if lo is None else [lo],
            dirtyTo=[] if lo is None else [hi],
        )
        names = [
            "hasMarkers",
            "newCursorNs",
            "hasSpan",
            "dirtyStartNs",
            "dirtyLimitNs",
            "dirtyEndNs",
            "hasDirty",
            "hasRest",
        ]
        for stmt in statements(text, names):
            interp.run(stmt)
        env = interp.env
        want = dirty_expected(tier, wm, lo, hi)
        if want is None:
            assert not env["hasDirty"] and not env["hasRest"]
            continue
        start, end, rest = want
        assert env["hasDirty"] and (env["dirtyStartNs"], env["dirtyEndNs"]) == (start * 1_000_000, end * 1_000_000)
        assert env["hasRest"] == (rest is not None)
        if rest:
            assert (env["dirtyEndNs"] // 1_000_000, env["dirtyLimitNs"] // 1_000_000) == rest
        assert env["newCursorNs"] == now * 1_000_000
