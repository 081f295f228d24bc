"""Run every benchmark once and write their results into README.md's benchmarks table.

    PYTHONPATH=src python bench/table.py [--data DATA] [--dry-run] [--only SCRIPT ...]

Each benchmark runs as its own process (as a user would run it) and its last output line, a JSON
object, becomes rows of the table, each naming the command that produced it. The table sits
between the ``<!-- bench-table -->`` and ``<!-- /bench-table -->`` markers of README.md and is
rewritten atomically (docs/benchmarks.md explains the rows). These machines are shared and noisy:
every speed is reported beside the machine's own compute limit measured in the same run.

DATA is a folder that holds the annotated real sets ``usiigaci_phc`` and ``yit_bf_yeast`` (not
part of the repository); the table names it ``DATA``. Without ``--data`` the real-data rows are
left out. ``--only`` reruns some scripts and keeps the other rows as the table has them (the
date line says which were rerun).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BEGIN, END = "<!-- bench-table -->", "<!-- /bench-table -->"


def run(command: list[str]) -> dict:
    """Run one benchmark (with this checkout's sources first) and parse its last line."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, *command], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if out.returncode != 0 or not out.stdout.strip():
        raise SystemExit(f"{' '.join(command)} failed:\n{out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"{' '.join(command)}: {time.perf_counter() - start:.0f} s", file=sys.stderr)
    # the whole result on stderr too: the docs quote more of it than the table holds
    print(json.dumps(result), file=sys.stderr, flush=True)
    return result


def shown(command: list[str]) -> str:
    """The command as typed in the checkout (paths relative to it)."""
    words = [os.path.relpath(w, ROOT) if os.path.isabs(w) else w for w in command]
    return "`" + " ".join(["python", *words]) + "`"


Row = tuple[str, str, str]


def count_rows(data: Path | None) -> list[Row]:
    rows: list[Row] = []
    cmd = ["bench/bench_count.py"]
    r = run(cmd)
    rows.append(
        (
            "Counting, 128x128 frames",
            (
                f"{r['images_per_s']:,.0f} images/s ({r['precision']} inner convolutions); "
                f"{r['images_per_s_float32']:,.0f} in float32 = {r['ratio']:.0%} of the float32 "
                f"compute limit ({r['limit_images_per_s']:,.0f} images/s); through a density "
                f"head, as the default model counts, {r['density_images_per_s']:,.0f} images/s"
            ),
            shown(cmd),
        )
    )
    if r.get("series_seconds") is not None:
        rows.append(
            (
                f"Counting a {r.get('series_frames', 10000):,}-frame TIFF series end to end",
                (
                    f"{r['density_series_seconds']:.0f} s with a density head, as the default "
                    f"model counts ({r['views']} orientations averaged, the default); through "
                    f"the regressor {r['series_seconds']:.0f} s, "
                    f"{r['series_seconds_one_view']:.0f} s with `--views 1`, "
                    f"{r['series_seconds_float32']:.0f} s with `--float32`"
                ),
                shown(cmd),
            )
        )
    return rows


def train_rows(data: Path | None) -> list[Row]:
    rows: list[Row] = []
    cmd = ["bench/bench_train.py"]
    r = run(cmd)
    rows.append(
        (
            "Training step, full (both losses, decoders)",
            f"{r['images_per_s_full']:,.0f} images/s = {r['ratio_full']:.0%} of the limit",
            shown(cmd),
        )
    )
    rows.append(
        (
            "Training step, decoder-free transfer",
            (
                f"{r['images_per_s_no_decoder']:,.0f} images/s = {r['ratio_no_decoder']:.0%} of "
                f"the limit ({r['images_per_s_no_decoder'] / r['images_per_s_full']:.1f}x the "
                "full step)"
            ),
            shown(cmd),
        )
    )
    return rows


def share_rows(data: Path | None) -> list[Row]:
    rows: list[Row] = []
    cmd = ["bench/bench_share.py"]
    r = run(cmd)
    for job in ("train", "count"):
        rows.append(
            (
                f"Two `{job}` runs started together",
                (
                    f"{r[job]['ratio']:.2f}x the time of one alone each ({r[job]['alone_s']:.0f} s "
                    "alone; 2.00x = one after the other)"
                ),
                shown(cmd),
            )
        )
    return rows


def experiment_rows(data: Path | None) -> list[Row]:
    rows: list[Row] = []
    cmd = ["bench/bench_experiment.py"]
    r = run(cmd)
    rows.append(
        (
            (
                f"A whole experiment ({r['positions']} OME-Zarr positions, {r['frames']:,} "
                f"frames, {r['views']} view): one process vs a local cluster"
            ),
            (
                f"{r['single_frames_per_s']:,.0f} against {r['cluster_frames_per_s']:,.0f} "
                f"frames/s with {r['workers']} workers x 1 thread: overhead {r['overhead']:+.0%}; "
                f"peak memory {max(r['peak_mib_per_worker']):,} MiB per worker"
            ),
            shown(cmd),
        )
    )
    return rows


def synth_rows(data: Path | None) -> list[Row]:
    cmd = ["bench/bench_synth.py"]
    r = run(cmd)
    per = ", ".join(f"{k} {v:,.0f}" for k, v in r["per_preset"].items())
    return [("Synthetic images (128x128)", f"{per} images/s", shown(cmd))]


def decoder_rows(data: Path | None) -> list[Row]:
    """bench/eval_decoders.py: whether the default model's views show the cells."""
    cmd = ["bench/eval_decoders.py"]
    r = run(cmd)

    def pair(kind: str) -> str:
        return " / ".join(f"{r[f'{p}_{kind}']['correlation']:.2f}" for p in ("bf", "pc"))

    return [
        (
            "Model views: correlation with the image, bright field / phase contrast",
            f"clean synthetic {pair('clean')}, sample series {pair('series')} (1 = drawn exactly)",
            shown(cmd),
        )
    ]


def real_rows(data: Path | None) -> list[Row]:
    rows: list[Row] = []
    if data is not None:
        for name in ("usiigaci_phc", "yit_bf_yeast"):
            folder = data / name
            if not folder.is_dir():
                continue
            r = run(["bench/eval_real.py", str(folder)])
            cmd = ["bench/eval_real.py", f"DATA/{name}"]
            for method, m in r["methods"].items():
                rows.append(
                    (
                        f"Real data `{name}`: {method}",
                        (
                            f"accuracy {m['accuracy']:.1%} ± {m['accuracy_sd']:.1%}, "
                            f"MAE {m['mae']:.2f} ± {m['mae_sd']:.2f}, MRE {m['mre']:.1f} %"
                        ),
                        shown(cmd),
                    )
                )
    return rows


def uncertainty_rows(data: Path | None) -> list[Row]:
    """bench/eval_uncertainty.py: the wrong counts among the most uncertain, and label next."""
    if data is None:
        return []
    r = run(["bench/eval_uncertainty.py", "--data", str(data)])
    cmd = shown(["bench/eval_uncertainty.py", "--data", "DATA"])
    rows = []
    for name, s in r["sets"].items():
        rows.append(
            (
                f"Uncertainty, `{name}`: wrong counts among the 10 % most uncertain",
                (
                    f"{s['top10_error_share']:.1%} of them (chance 10 %, at most "
                    f"{s['ceiling']:.1%} with {s['error_rate']:.0%} wrong)"
                ),
                cmd,
            )
        )
    for share, ways in r.get("label_next", {}).items():
        nxt, rnd = ways["label_next"], ways["random"]
        rows.append(
            (
                f"Label next on `usiigaci_phc`, {float(share):.0%} of the source images labeled",
                (
                    f"MAE {nxt['mae']:.2f} ± {nxt['mae_sd']:.2f} against {rnd['mae']:.2f} ± "
                    f"{rnd['mae_sd']:.2f} for random frames ({r['transfer_minutes']:g} min "
                    "transfers)"
                ),
                cmd,
            )
        )
    s = r["series_flags"]
    rows.append(
        (
            "Growth-series flags, six sample series",
            (
                f"catch {s['caught_share']:.0%} of the wrong counts, flag "
                f"{s['flagged_share']:.1%} of the frames"
            ),
            cmd,
        )
    )
    rows.append(
        (
            "*Check these frames* (flagged, or uncertainty 0.5 or more), six sample series",
            (
                f"holds {s['check_list_caught_share']:.0%} of the wrong counts, lists "
                f"{s['check_list_share']:.1%} of the frames"
            ),
            cmd,
        )
    )
    return rows


BENCHMARKS = {
    "bench/bench_count.py": count_rows,
    "bench/bench_train.py": train_rows,
    "bench/bench_share.py": share_rows,
    "bench/bench_experiment.py": experiment_rows,
    "bench/bench_synth.py": synth_rows,
    "bench/eval_decoders.py": decoder_rows,
    "bench/eval_real.py": real_rows,
    "bench/eval_uncertainty.py": uncertainty_rows,
}
"""Each script and the rows it gives, in the table's order."""


def rows_for(data: Path | None, only: list[str], kept: list[Row]) -> list[Row]:
    """The table's rows: every benchmark run afresh, or with ``only`` just those scripts, the
    other scripts' rows taken from ``kept`` (the table as it stands)."""
    rows: list[Row] = []
    for script, rows_of in BENCHMARKS.items():
        if only and script not in only:
            rows += [row for row in kept if f"python {script}" in row[2]]
        else:
            rows += rows_of(data)
    return rows


def table_rows(table: str) -> list[Row]:
    """The (what, result, command) rows of a table that :func:`render` wrote."""
    rows = []
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if line.startswith("| ") and len(cells) == 3 and cells[0] != "what":
            rows.append((cells[0], cells[1], cells[2]))
    return rows


def render(rows: list[Row], only: list[str]) -> str:
    rerun = f" ({', '.join(only)} rerun, the other rows as before)" if only else ""
    lines = [
        (
            f"*{time.strftime('%Y-%m-%d')}{rerun}, {os.cpu_count()} CPU cores "
            f"({platform.machine()}); regenerate with `PYTHONPATH=src python bench/table.py "
            "--data DATA`.*"
        ),
        "",
        "| what | result | command |",
        "|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def readme_parts() -> tuple[str, str, str]:
    """README.md as (before the table, the table, after it)."""
    text = README.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise SystemExit(f"README.md has no {BEGIN} ... {END} markers")
    head, rest = text.split(BEGIN, 1)
    current, tail = rest.split(END, 1)
    return head, current, tail


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, help="folder of the real sets (usiigaci_phc, yit_bf_yeast)"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the table, leave README")
    parser.add_argument(
        "--only",
        nargs="+",
        default=[],
        choices=list(BENCHMARKS),
        metavar="SCRIPT",
        help="rerun only these scripts (e.g. bench/bench_count.py); keep the other rows",
    )
    args = parser.parse_args(argv)
    _, current, _ = readme_parts()
    needs_data = {"bench/eval_real.py", "bench/eval_uncertainty.py"}
    if args.data is None and (not args.only or needs_data & set(args.only)):
        print("no --data: the real-data rows are left out", file=sys.stderr)
    table = render(rows_for(args.data, args.only, table_rows(current)), args.only)
    if args.dry_run:
        print(table)
        return 0
    sys.path.insert(0, str(ROOT / "src"))
    from napari_twinvae.core.io import atomic_write

    # README read again: a full run takes an hour, and edits made meanwhile must survive it
    head, _, tail = readme_parts()
    with atomic_write(README, "w") as f:
        f.write(f"{head}{BEGIN}\n{table}\n{END}{tail}")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
