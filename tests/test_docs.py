"""The README stays a short front door whose links, markers and commands keep working."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]


def _anchor(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_readme_is_under_15_kb():
    assert README.stat().st_size < 15_000


def test_every_local_link_and_anchor_resolves():
    broken = []
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        for link in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", link):
                continue
            path, _, anchor = link.partition("#")
            target = (page.parent / path).resolve() if path else page
            if not target.exists():
                broken.append(f"{page.name}: {link}")
            elif anchor and target.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", target.read_text(encoding="utf-8"), re.M)
                if anchor not in {_anchor(h) for h in headings}:
                    broken.append(f"{page.name}: {link}")
    assert not broken


def test_ci_reads_the_test_command_after_its_marker():
    out = subprocess.run(
        ["awk", "/<!-- test-command -->/{getline; getline; print; exit}", str(README)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "pytest" in out.stdout


def test_the_benchmarks_table_has_its_markers_once():
    text = README.read_text(encoding="utf-8")
    assert text.count("<!-- bench-table -->") == 1
    assert text.count("<!-- /bench-table -->") == 1


def _bench_table():
    """bench/table.py as a module (bench/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_table", ROOT / "bench" / "table.py")
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    return table


def test_rerunning_one_benchmark_keeps_every_other_row_of_the_table(monkeypatch):
    table = _bench_table()
    text = README.read_text(encoding="utf-8")
    kept = table.table_rows(text.split(table.BEGIN)[1].split(table.END)[0])
    assert kept and all(r[2].startswith("`python bench/") for r in kept)
    fresh = ("Synthetic images (128x128)", "1 images/s", "`python bench/bench_synth.py`")
    monkeypatch.setitem(table.BENCHMARKS, "bench/bench_synth.py", lambda data: [fresh])
    rows = table.rows_for(None, ["bench/bench_synth.py"], kept)
    synth = [i for i, r in enumerate(kept) if "bench_synth" in r[2]]
    assert rows == kept[: synth[0]] + [fresh] + kept[synth[-1] + 1 :]
    assert "bench/bench_synth.py rerun" in table.render(rows, ["bench/bench_synth.py"])


def test_the_table_keeps_readme_edits_made_while_the_benchmarks_ran(monkeypatch, tmp_path):
    table = _bench_table()
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{table.BEGIN}\n| what | result | command |\n{table.END}\nend\n")
    monkeypatch.setattr(table, "README", readme)
    fresh = ("Synthetic images (128x128)", "1 images/s", "`python bench/bench_synth.py`")

    def benchmark(data):  # someone edits the README while the benchmark runs
        readme.write_text(readme.read_text().replace("intro", "intro, edited"))
        return [fresh]

    monkeypatch.setitem(table.BENCHMARKS, "bench/bench_synth.py", benchmark)
    assert table.main(["--only", "bench/bench_synth.py"]) == 0
    text = readme.read_text()
    assert text.startswith("intro, edited\n") and text.endswith("end\n")
    assert "| Synthetic images (128x128) | 1 images/s |" in text


def test_no_trace_of_a_development_machine_in_the_repository():
    traces = re.compile(r"/work/|/home/|/tmp/|SPEC section|development machine|was lent")
    sources = [p for d in ("src", "bench", "scripts", "tests") for p in (ROOT / d).rglob("*.py")]
    found = [
        f"{path.relative_to(ROOT)}: {m.group(0)}"
        for path in PAGES + sorted(sources)
        if path != Path(__file__).resolve()
        for m in traces.finditer(path.read_text(encoding="utf-8"))
    ]
    assert not found
    # the shipped model's stored training summary too (torch stores its pickle uncompressed)
    shipped = (ROOT / "src" / "napari_twinvae" / "models" / "default.pt").read_bytes()
    assert not re.search(traces.pattern.encode(), shipped)
