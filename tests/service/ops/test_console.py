"""The progress bar: one last line, in units a person reads."""

from __future__ import annotations

from service.ops.console import Progress


def test_finish_does_not_print_the_last_line_twice(capsys):
    progress = Progress("import x", 1000, "bytes")
    progress.update(1000, force=True)  # the last update already showed 100 %
    progress.finish(1000)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "100.0%" in lines[0], lines


def test_finish_prints_when_the_last_line_shown_is_behind(capsys):
    progress = Progress("import x", 1000, "bytes")
    progress.update(10, force=True)
    progress.finish(1000)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 2 and "100.0%" in lines[-1]


def test_fractional_amounts_read_plainly(capsys):
    progress = Progress("export", 31.5, "days of range")
    progress.finish(31.5)
    line = capsys.readouterr().err
    assert "31.5/31.5 days of range" in line


def test_downsampling_progress_counts_tiers_without_a_rate(tmp_path, capsys):
    import asyncio

    from service.core.plan import default_plan
    from service.ops.downsample import run_to_edge
    from service.storage.embedded.store import EmbeddedStore

    async def run():
        store = EmbeddedStore(str(tmp_path / "tvflux.duckdb"), default_plan())
        await store.start()
        try:
            await run_to_edge(store, clock_ms=lambda: 1_700_000_000_000)
        finally:
            await store.close()

    asyncio.run(run())
    err = capsys.readouterr().err
    assert "tiers at the edge" in err and "tiers at the edge/s" not in err, err
