"""Run the fuzz and fault suites once and write what they tried into docs/reliability.md.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/reliability.py [--dry-run]

The fuzz suite covers the command line and the docks (tests/fuzz/test_fuzz_docks.py, in a viewer
under Xvfb, as pytest-xvfb provides). Every generated input and injected fault is counted by the
test that tried it (tests/_reliability.py) with its outcome: worked, refused with one clear line
(a dock: one notification), a traceback, or a damaged file or annotation. The table sits
between the ``<!-- reliability-table -->`` markers of the page and is rewritten atomically; with
``--dry-run`` it is printed instead. The counts are those of the default, derandomised hypothesis
profile, so a rerun tries the same inputs; ``HYPOTHESIS_PROFILE=thorough`` tries many more.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "reliability.md"
BEGIN, END = "<!-- reliability-table -->", "<!-- /reliability-table -->"
SUITES = ("tests/fuzz", "tests/faults")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="print the table, write nothing")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    import pytest

    started = time.perf_counter()
    status = pytest.main(["-q", "-p", "no:cacheprovider", *SUITES])
    seconds = time.perf_counter() - started
    from tests._reliability import OUTCOMES, TALLY

    table = render(TALLY, OUTCOMES, seconds, status)
    if args.dry_run:
        print(table)
    else:
        text = PAGE.read_text(encoding="utf-8")
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        tmp = PAGE.with_suffix(".md.part")
        tmp.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}", encoding="utf-8")
        tmp.replace(PAGE)
        print(f"wrote {PAGE.relative_to(ROOT)}")
    return int(status)


def render(tally, outcomes, seconds: float, status: int) -> str:
    rows = [
        "| test | tried | " + " | ".join(outcomes) + " |",
        "|---|---:|" + "---:|" * len(outcomes),
    ]
    totals = dict.fromkeys(outcomes, 0)
    grouped: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for test, counts in tally.items():  # parametrised cases add up under their test
        grouped[test.split("[", 1)[0]].update(counts)
    for test in sorted(grouped):
        counts = grouped[test]
        for outcome in outcomes:
            totals[outcome] += counts[outcome]
        name = test.replace("tests/", "", 1)
        cells = " | ".join(str(counts[o]) for o in outcomes)
        rows.append(f"| `{name}` | {sum(counts.values())} | {cells} |")
    cells = " | ".join(f"**{totals[o]}**" for o in outcomes)
    rows.append(f"| **all** | **{sum(totals.values())}** | {cells} |")
    verdict = "all passed" if status == 0 else f"pytest exit status {status}"
    rows.append("")
    rows.append(f"{len(grouped)} tests, {seconds / 60:.1f} minutes on a 2-core CPU, {verdict}.")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
