"""bench/gpu_transfer.py runs the dock's training job without Qt and ends with its JSON line."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import tifffile

from napari_twinvae.core.synthetic import SynthConfig, generate
from tests._checkpoints import small_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def _real_set(folder: Path, sources: int = 6, per_source: int = 2) -> Path:
    """A set as bench/eval_real.py reads it: crops, counts per crop and source, clicked cells."""
    n = sources * per_source
    batch = generate(n, SynthConfig(), rng=0, counts=np.random.default_rng(0).integers(2, 9, n))
    folder.mkdir()
    tifffile.imwrite(folder / "images.tif", (batch.images * 4095).astype(np.uint16))
    rows = ["index,count,source_file,nonoverlap"]
    rows += [f"{i},{c},image{i // per_source},1" for i, c in enumerate(batch.counts)]
    (folder / "counts.csv").write_text("\n".join(rows) + "\n")
    points = ["index,y,x", *(f"{int(t)},{y:.2f},{x:.2f}" for t, y, x in batch.centres)]
    (folder / "points.csv").write_text("\n".join(points) + "\n")
    return folder


def test_one_cpu_epoch_reports_timings_and_metrics(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script puts bench/ on it
    spec = importlib.util.spec_from_file_location(
        "gpu_transfer", ROOT / "bench" / "gpu_transfer.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    data = _real_set(tmp_path / "fake_phc")
    model = small_checkpoint(tmp_path / "start.pt")
    argv = [str(data), "--device", "cpu", "--epochs", "2", "--labeled-share", "0.34"]
    assert script.main([*argv, "--model", str(model), "--count-frames", "20"]) == 0
    report = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert report["device"].startswith("cpu, ") and report["stopped"] == "finished"
    assert report["labeled_crops"] == 4 and report["metrics"]["n"] == 8
    assert report["head"] == "density"  # a transfer on clicks learns a density map
    assert report["first_epoch_s"] > 0 and report["later_epoch_s"] > 0
    assert report["steps"] == 2 * report["steps_per_epoch"]
    assert report["count_frames"] == 20 and report["count_frames_per_s"] > 0
