"""docs/reliability.md is the fault suite's output: one row per fault, none losing a trade."""

from pathlib import Path

from tests.faults.harness import FAULTS
from tests.faults.report import NOT_COVERED

DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"


def test_reliability_doc_has_one_row_per_fault_and_nothing_lost():
    rows = [line for line in DOC.read_text().splitlines() if line.startswith("| ") and not line.startswith("| fault")]
    assert len(rows) == len(FAULTS)
    measured = 0
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        lost, bare = cells[6], cells[7]
        if lost == "—":
            assert any(cells[0] == title for title, _ in NOT_COVERED.values()), line
            continue
        measured += 1
        assert lost == "0" and bare == "0", line
    assert measured == len(FAULTS) - len(NOT_COVERED)
