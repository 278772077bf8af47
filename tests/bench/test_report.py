"""The performance report is rendered from the saved results only: the committed
docs/performance.md is what they render to, a section is left out when its results are
missing, and verdicts follow the figures."""

from __future__ import annotations

import copy
import re

import pytest

from bench.report import DOC, TEMPLATE, load_results, render


@pytest.fixture(scope="module")
def results():
    return load_results()


def test_the_committed_report_is_what_the_saved_results_render(results):
    assert render(results) == DOC.read_text(), "docs/performance.md is stale: run `python -m bench.report`"


def test_every_section_of_the_template_renders_from_the_saved_results(results):
    headings = re.findall(r"^##? .+$", TEMPLATE.read_text(), re.M)
    text = render(results)
    assert len(headings) > 10 and [h for h in headings if h not in text.splitlines()] == []


def test_a_section_is_left_out_without_its_results(results):
    partial = {k: v for k, v in results.items() if k not in ("influx", "soak")}
    text = render(partial)
    assert "## On InfluxDB 2 itself" not in text and "InfluxDB 2, measured" not in text
    assert "## Soak" not in text
    assert "| InfluxDB, " not in text  # nor its rows in the summary
    assert "## History latency" in text


def test_verdicts_follow_the_figures(results):
    def row(text: str, start: str) -> str:
        return next(line for line in text.splitlines() if line.startswith(start))

    assert row(render(results), "| ingest ≥ 300,000/s").endswith("| **met** |")
    worse = copy.deepcopy(results)
    worse["ingest"]["headline"]["ingest"]["achieved_per_s"] = 250_000
    assert row(render(worse), "| ingest ≥ 300,000/s").endswith("| **missed** |")
    worse["backfill"]["seconds"] = 61.0
    assert row(render(worse), "| backfill ").endswith("| **missed** |")
