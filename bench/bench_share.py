"""Two jobs sharing the cores: each one's time when two run together, against one alone.

Runs ``napari-twinvae train`` (and ``count``) as a user would, in processes of their own: one
alone, then two started together, alternating over rounds on the same machine, and reports the
median ratio of each together-run's wall time to the alone-run's of its round. Run one after the
other, two jobs take 2.0 times one; much more means the jobs fight over the cores (spinning
threads, more threads than cores). ``--src`` times another checkout's sources (an older
version, for a before/after). The last line is a JSON object.

    PYTHONPATH=src python bench/bench_share.py [--rounds 2] [--jobs train,count] [--src SRC]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def command(job: str, data: Path, tag: str) -> list[str]:
    cli = [sys.executable, "-m", "napari_twinvae"]
    if job == "train":
        return [
            *cli,
            "train",
            str(data / "train" / "images.tif"),
            "--labels",
            str(data / "train" / "counts.csv"),
            "--out",
            str(data / f"model-{tag}.pt"),
            "--epochs",
            "2",
        ]
    return [*cli, "count", str(data / "count" / "images.tif"), "--out", str(data / f"{tag}.csv")]


def timed(commands: list[list[str]], env: dict) -> list[float]:
    """Start all commands at once; the wall time of each."""
    start = time.perf_counter()
    running = [
        subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for c in commands
    ]
    seconds = []
    for process in running:
        _, err = process.communicate()
        seconds.append(time.perf_counter() - start)
        if process.returncode:
            raise SystemExit(f"{' '.join(commands[0])} failed:\n{err.decode()[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--jobs", default="train,count", help="train, count or both")
    parser.add_argument("--src", type=Path, default=ROOT / "src", help="the sources to time")
    args = parser.parse_args()
    env = dict(os.environ, PYTHONPATH=str(args.src.resolve()))
    for name in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "NAPARI_TWINVAE_THREADS"):
        env.pop(name, None)  # as a user starts them
    result: dict = {"cpus": os.cpu_count(), "rounds": args.rounds}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        cli = [sys.executable, "-m", "napari_twinvae", "synth", "--preset", "pc", "--seed", "0"]
        for folder, n in (("train", 28), ("count", 120)):  # 28 labeled crops, as in issue 22
            subprocess.run(
                [*cli, "--n", str(n), "--out", str(data / folder)],
                env=env,
                check=True,
                capture_output=True,
            )
        for job in args.jobs.split(","):
            alone, together, ratios = [], [], []
            for r in range(args.rounds):
                (one,) = timed([command(job, data, f"{job}{r}a")], env)
                pair = timed([command(job, data, f"{job}{r}{t}") for t in "bc"], env)
                alone.append(one)
                together.append(max(pair))
                ratios.append(max(pair) / one)
                print(
                    f"{job} round {r}: alone {one:.1f} s, two together {pair[0]:.1f} s and "
                    f"{pair[1]:.1f} s: {max(pair) / one:.2f}x alone",
                    flush=True,
                )
            ratio = statistics.median(ratios)
            print(f"{job}: two together take {ratio:.2f}x one alone each (2.0 = one after other)")
            result[job] = {
                "alone_s": round(statistics.median(alone), 2),
                "together_s": round(statistics.median(together), 2),
                "ratio": round(ratio, 3),
            }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
