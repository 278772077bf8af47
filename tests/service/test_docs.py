"""The docs are kept true by the code they describe: every setting, route, metric, alert and
link they mention must exist, and everything that exists must be mentioned."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from service.core.settings import Secret, Settings, env_name, load_settings

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
SETTING_ROW = re.compile(r"^\| `(TVFLUX_[A-Z0-9_]+)` \| ([^|]*) \|", re.MULTILINE)
METRIC = re.compile(r"\b((?:tvflux|process)_[a-z0-9_]+)")


def read(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def rendered_default(value: object) -> str:
    """A default as the configuration table writes it."""
    if isinstance(value, tuple):
        value = ",".join(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, Secret) or value == "":
        return "–"
    return f"`{value}`"


def test_deployment_lists_every_setting_with_its_default_and_nothing_else():
    text = read("deployment.md")
    rows = dict(SETTING_ROW.findall(text))
    defaults = Settings()
    expected = {env_name(f): rendered_default(getattr(defaults, f)) for f in Settings.__struct_fields__}
    missing = sorted(set(expected) - set(rows))
    assert not missing, f"docs/deployment.md lacks a row for {missing}"
    unknown = sorted({n for n in re.findall(r"TVFLUX_[A-Z0-9_]+", text)} - set(expected))
    assert not unknown, f"docs/deployment.md mentions settings that do not exist: {unknown}"
    wrong = {name: (rows[name].strip(), default) for name, default in expected.items() if rows[name].strip() != default}
    assert not wrong, f"documented defaults differ from service/core/settings.py: {wrong}"


@pytest.mark.parametrize("doc", ["setup.md", "api.md", "downsampling.md", "backup.md", "monitoring.md"])
def test_other_docs_mention_only_real_settings(doc):
    known = {env_name(f) for f in Settings.__struct_fields__}
    unknown = sorted({n for n in re.findall(r"TVFLUX_[A-Z0-9_]*[A-Z0-9]", read(doc))} - known)
    assert not unknown, f"docs/{doc} mentions settings that do not exist: {unknown}"


def test_api_doc_covers_every_route_the_app_registers():
    from service.api.app import create_app

    app = create_app(load_settings({}))
    text = read("api.md")
    missing = []
    for route in app.routes:
        path = re.sub(r"\{[^}]+\}", "", route.path)
        if path.startswith("/schema/"):  # the schema viewers: covered by the /schema entry
            continue
        methods = sorted(set(getattr(route, "methods", None) or {"WS"}) - {"OPTIONS", "HEAD"})
        missing += [f"{m} {path}" for m in methods if f"{m} {path}" not in text]
    assert not missing, f"docs/api.md does not describe: {missing}"
    assert "/schema/openapi.json" in text


def test_relative_links_in_docs_resolve():
    broken = []
    for doc in [*DOCS.glob("*.md"), ROOT / "README.md"]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text(encoding="utf-8")):
            if "://" not in target and not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(ROOT)} -> {target}")
    assert not broken, broken


def family_names(metrics_text: str) -> set[str]:
    """Names as written in queries and docs: counters with ``_total``."""
    names = set()
    for family in text_string_to_metric_families(metrics_text):
        names.add(family.name + "_total" if family.type == "counter" else family.name)
    return names


def queried(name: str) -> str:
    return re.sub(r"_(bucket|sum|count)$", "", name)


def test_dashboard_alerts_and_monitoring_doc_match_a_live_metrics_page(module_server):
    # a page of a service that has run: some gauges (the last run's duration) exist only
    # after the first downsampling run, which a just-started server may not have finished
    deadline = time.monotonic() + 20
    while True:
        status, text = module_server.get("/metrics")
        assert status == 200
        if "tvflux_downsampler_last_run_seconds" in text or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    served = family_names(text)
    dashboard = json.loads(read("grafana/tvflux-dashboard.json"))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    alerts = yaml.safe_load(read("prometheus/alerts.yml"))
    rules = [r for g in alerts["groups"] for r in g["rules"]]
    used = {queried(m) for e in exprs + [r["expr"] for r in rules] for m in METRIC.findall(e)}
    assert not used - served, f"dashboard/alerts use metrics /metrics does not serve: {sorted(used - served)}"
    doc = read("monitoring.md")
    listed = {m for m in METRIC.findall(doc)}
    undocumented = {n for n in served if n.startswith("tvflux_")} - listed
    assert not undocumented, f"docs/monitoring.md does not list {sorted(undocumented)}"
    assert not {m for m in listed if m.startswith("tvflux_")} - served, (
        "docs/monitoring.md lists metrics that do not exist"
    )
    assert all(f"`{r['alert']}`" in doc for r in rules), "every alert rule is explained in docs/monitoring.md"
    assert all(p["datasource"]["uid"] == "prometheus" for p in dashboard["panels"] if "datasource" in p)


def test_compose_and_the_docs_bound_influxd_as_the_tests_and_bench_run_it():
    from bench.influxd import MEMORY_BOUNDS

    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    env = compose["services"]["influxdb"]["environment"]
    docs = (ROOT / "docs" / "deployment.md").read_text()
    for flag, value in MEMORY_BOUNDS.items():
        assert env["INFLUXD_" + flag.upper().replace("-", "_")] == value, flag
        assert f"| `--{flag}` | `{value}`" in docs, flag


def test_monitoring_files_fit_together_and_compose_mounts_them():
    prometheus = yaml.safe_load(read("prometheus.yml"))
    (job,) = prometheus["scrape_configs"]
    assert job["job_name"] == "tvflux" and job["metrics_path"] == "/metrics"
    datasource = yaml.safe_load(read("grafana/provisioning/datasources/prometheus.yml"))
    assert datasource["datasources"][0]["uid"] == "prometheus"
    provider = yaml.safe_load(read("grafana/provisioning/dashboards/tvflux.yml"))
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert services["prometheus"]["profiles"] == ["monitoring"] == services["grafana"]["profiles"]
    mounts = {}
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            source, target = volume.split(":")[:2]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"compose mounts a missing file: {source}"
                mounts[target] = source
    assert prometheus["rule_files"][0] in mounts
    assert any(t.startswith(provider["providers"][0]["options"]["path"]) for t in mounts)
    assert job["static_configs"][0]["targets"] == ["tvflux:8000"] and "tvflux" in services


def test_readiness_numbers_in_the_docs_match_the_code():
    from service.core.readiness import DEFAULT_DOWNSAMPLING_SLACK_S, DEFAULT_WRITER_LAG_S, max_tier_lags_ms

    settings = Settings()
    limits = max_tier_lags_ms(settings.plan, settings.downsample_interval_ms, int(DEFAULT_DOWNSAMPLING_SLACK_S * 1000))

    def spoken(ms: int) -> str:
        h, rest = divmod(ms // 1000, 3600)
        m, s = divmod(rest, 60)
        return " ".join(p for p in (f"{h} h" if h else "", f"{m} min" if m else "", f"{s} s" if s else "") if p)

    text = " ".join(read("downsampling.md").split())
    for tier, ms in limits.items():
        assert f"`{tier}` {spoken(ms)}" in text, (tier, spoken(ms))
    assert f"max({DEFAULT_WRITER_LAG_S:.0f} s, 3 × TVFLUX_FLUSH_INTERVAL_MS)" in read("monitoring.md")


# --- README and setup commands run as written after `make run` ------------------------------

# What the README lists as requirements (plus the shell's own): everything else must be a
# program of the virtualenv `make run` creates, named by its path.
SYSTEM_PROGRAMS = {"make", "curl", "cp", "docker", "python3", "cd", "npm", "bash"}


def shell_commands(text: str) -> list[str]:
    """The command lines of a document's ```sh blocks: no comments, no continuation
    lines, no lines typed into a program (JSON), no bare variable assignments."""
    out, in_block, continued = [], False, False
    for line in text.splitlines():
        if line.startswith("```"):
            in_block = line.strip() == "```sh"
            continued = False
            continue
        if not in_block:
            continue
        stripped = line.strip()
        was_continued, continued = continued, stripped.endswith("\\")
        if was_continued or not stripped or stripped.startswith(("#", "{")):
            continue
        out.append(stripped)
    return out


def program_of(command: str) -> str | None:
    words = command.lstrip("(").split()
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        if "$(" in words[0]:  # `price=$(…)`: the program is inside the substitution
            return program_of(words[0].split("$(", 1)[1] + " " + " ".join(words[1:]))
        words = words[1:]
    return words[0] if words else None


@pytest.mark.parametrize("doc", ["README.md", "docs/setup.md"])
def test_every_command_in_the_docs_runs_as_written_after_make_run(doc):
    commands = shell_commands((ROOT / doc).read_text())
    assert commands
    wrong = []
    for command in commands:
        program = program_of(command)
        if program is None or program in SYSTEM_PROGRAMS:
            continue
        if not program.startswith(".venv/bin/"):
            wrong.append(f"{program!r} (needs the virtualenv: .venv/bin/{program}): {command}")
        elif not (ROOT / program).exists():
            wrong.append(f"{program} is not installed by `make run`: {command}")
    assert not wrong, "\n".join(wrong)
    if doc == "README.md":
        assert commands[:2] == [
            "make run    # sets up .venv and the npm packages, then serves http://127.0.0.1:8000",
            "make test   # sets up the same, then runs the whole test suite",
        ]


def test_setup_doc_shows_data_dir_as_the_global_option_it_is():
    from service.ops.cli import build_parser

    text = (ROOT / "docs/setup.md").read_text()
    assert "serve --host --port --data-dir" not in text
    assert build_parser().parse_args(["--data-dir", "/x", "serve"]).data_dir == "/x"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--data-dir", "/x"])


def test_readme_try_it_trades_at_the_markets_price_not_a_made_up_one():
    text = (ROOT / "README.md").read_text()
    block = text.split("Try it", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    assert "\"price\":'$price'" in block and "61000.5" not in block
