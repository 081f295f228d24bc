"""A transfer as the Label & train dock runs it, on a chosen device: how long it trains, how well
the result counts, and how fast it counts.

    PYTHONPATH=src python bench/gpu_transfer.py DATA/usiigaci_phc [--device cpu|cuda|auto]
        [--epochs 50] [--seed 0] [--labeled-share 0.1] [--model default] [--head density]
        [--count-frames 10000]

The inputs are a user's: the labeled crops of one bench/eval_real.py split (by source image)
become the frames, their clicked cells the points, checked as the dock checks them. The dock's
worker job (``_widgets._training.prepare_and_train``) trains on them with the dock's default
settings. In the dock a superqt GeneratorWorker runs that generator; here a plain thread runs it
the same way (threads set as ``_workers._job`` sets them, every yield collected, the return value
or the error kept), so neither Qt nor napari is needed and it runs on a bare GPU machine.

Reported: wall seconds from start to the result; the first epoch (start-up, kernel tuning)
against the mean of the later ones, timed at the epoch-end reports; the steps; count metrics of
the trained model on the evaluation crops (core.metrics, counted as eval_real counts them) and
the bias of its unrounded estimates (the metrics' bias is that of the rounded counts); and
the frames/s of counting ``--count-frames`` frames (the evaluation crops tiled) with the default
count settings. Progress goes to stderr; the last stdout line is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import queue
import random
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_real import checkpoint_of, load_set, split  # noqa: E402

from napari_twinvae._widgets._training import TrainJob, prepare_and_train  # noqa: E402
from napari_twinvae.core.config import HEADS  # noqa: E402
from napari_twinvae.core.device import select_device  # noqa: E402
from napari_twinvae.core.labels import annotation_of  # noqa: E402
from napari_twinvae.core.metrics import count_metrics  # noqa: E402
from napari_twinvae.core.predict import count  # noqa: E402
from napari_twinvae.core.threads import use_threads  # noqa: E402
from napari_twinvae.core.train import TrainConfig, TrainProgress  # noqa: E402
from napari_twinvae.core.trainset import check_labels  # noqa: E402


def clock(device: torch.device) -> float:
    """Seconds now, once the device's queued work is done (CUDA kernels run asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def run_worker(job_function, *args, device: torch.device):
    """Run a worker generator in a plain thread as the dock's GeneratorWorker runs it; its
    reports reach this thread through a queue, as ``yielded`` reaches the GUI thread.

    Returns (the return value, [(seconds since start, report), ...]); an error in the job is
    raised here."""
    events: queue.Queue = queue.Queue()
    start = clock(device)

    def work() -> None:
        use_threads()  # as _workers._job does first
        job = job_function(*args)
        try:
            while True:
                report = next(job)
                events.put(("yielded", clock(device) - start, report))
        except StopIteration as done:
            events.put(("returned", None, done.value))
        except BaseException as err:  # noqa: BLE001 - handed to the caller, as `errored` is
            events.put(("errored", None, err))
        finally:
            job.close()  # as ClosingWorker does: the job's finally blocks run in its thread

    thread = threading.Thread(target=work, name="train-worker")
    thread.start()
    reports = []
    while True:
        kind, seconds, value = events.get()
        if kind == "errored":
            thread.join()
            raise value
        if kind == "returned":
            thread.join()
            return value, reports
        reports.append((seconds, value))
        if isinstance(value, TrainProgress) and value.epoch_end:
            held_out = f", validation MAE {value.validation['mae']:.2f}" if value.validation else ""
            print(
                f"  epoch {value.epoch}/{value.epochs} at {seconds:.1f} s{held_out}",
                file=sys.stderr,
            )


def epoch_seconds(reports) -> tuple[list[float], int]:
    """Seconds of each epoch between the epoch-end reports (the first, epoch 0, comes once the
    start model is validated, before any step), and the steps run (an epoch-end report's step
    is the steps its epoch ran)."""
    ends = [(t, r) for t, r in reports if isinstance(r, TrainProgress) and r.epoch_end]
    marks = [t for t, _ in ends]
    return np.diff(marks).tolist(), sum(r.step for _, r in ends)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type}, {torch.get_num_threads()} threads"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("set", type=Path, help="one annotated set: images.tif, counts.csv, ...")
    parser.add_argument("--device", default="auto", help="cpu, cuda (cuda:N) or auto")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--labeled-share", type=float, default=0.1)
    parser.add_argument("--model", default="default", help="start model: default, file, scratch")
    parser.add_argument("--head", choices=HEADS, help="default: automatic, as the dock's")
    parser.add_argument("--count-frames", type=int, default=10_000, help="frames timed counting")
    args = parser.parse_args(argv)
    try:
        device = select_device(args.device)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    use_threads()  # counting below runs here; the dock's Count worker sets the same
    random.seed(args.seed)
    np.random.seed(args.seed)  # torch: TrainConfig.seed; the split and counts: their own seeds

    raw, _, counts, sources, independent, cells = load_set(args.set)
    labeled, evaluation = split(sources, independent, args.labeled_share, args.seed)
    frames = np.ascontiguousarray(raw[labeled])  # as a user's stack: raw, no chambers
    points = [np.c_[np.full(len(cells[i]), f), cells[i]] for f, i in enumerate(labeled)]
    # every labeled crop counted: one without cells is marked empty in the dock
    annotation = annotation_of(np.vstack(points), range(len(labeled)))
    labels = check_labels(frames, annotation, None)
    # the dock's config(): its other settings start at TrainConfig's defaults (freeze "none",
    # decoders on, batch size 64); head None is its "automatic"
    config = TrainConfig(
        init=args.model,
        head=args.head,
        epochs=args.epochs,
        minutes=None,
        preset="bf" if "bf" in args.set.name else "pc",
        seed=args.seed,
        device=args.device,
    )
    print(
        f"{args.set.name}, seed {args.seed}: {len(labeled)} labeled crops "
        f"({len(annotation.points)} cells), {len(evaluation)} evaluation crops; "
        f"training on {device_name(device)}",
        file=sys.stderr,
    )

    start = clock(device)
    result, reports = run_worker(
        prepare_and_train, frames, None, labels, config, TrainJob(config), device=device
    )
    train_s = clock(device) - start
    per_epoch, steps = epoch_seconds(reports)
    print(f"trained in {train_s:.1f} s ({result.stopped}), {steps} steps", file=sys.stderr)

    checkpoint = checkpoint_of(result)
    start = clock(device)
    estimates = count(raw[evaluation], checkpoint, device=args.device).estimates[:, 0]
    eval_s = clock(device) - start
    metrics = count_metrics(estimates, counts[evaluation])
    print(f"evaluation crops: {metrics} ({eval_s:.1f} s)", file=sys.stderr)

    # timed after the evaluation count, which warmed the device up
    stack = raw[evaluation][np.arange(args.count_frames) % len(evaluation)]
    start = clock(device)
    count(stack, checkpoint, device=args.device)
    count_s = clock(device) - start
    print(f"counted {len(stack)} frames in {count_s:.1f} s", file=sys.stderr)

    rest = per_epoch[1:]
    print(
        json.dumps(
            {
                "device": device_name(device),
                "torch": str(torch.__version__),
                "set": args.set.name,
                "seed": args.seed,
                "epochs": args.epochs,
                "labeled_crops": len(labeled),
                "head": result.model.config.head,
                "stopped": result.stopped,
                "train_s": round(train_s, 2),
                "first_epoch_s": round(per_epoch[0], 2) if per_epoch else None,
                "later_epoch_s": round(float(np.mean(rest)), 2) if rest else None,
                "steps": steps,
                "steps_per_epoch": reports[-1][1].steps_per_epoch,
                "metrics": {k: round(v, 4) for k, v in metrics.items()},
                "bias": round(float(np.mean(estimates - counts[evaluation])), 4),
                "count_frames": len(stack),
                "count_frames_per_s": round(len(stack) / count_s, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
