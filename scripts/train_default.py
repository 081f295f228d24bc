"""Train the default model that ships in the package, and report how well it counts.

    PYTHONPATH=src python scripts/train_default.py --out runs/stage1.pt --float32 \
        --renew --no-decoder --schedule cosine --dropout 0 --learning-rate 5e-4 --natural 8000 \
        --minutes 75 --decoder-minutes 6 --test-images 1000 --seed 0
    PYTHONPATH=src python scripts/train_default.py --out runs/stage2.pt --float32 \
        --init runs/stage1.pt --renew --no-decoder --schedule cosine --dropout 0 \
        --learning-rate 3e-4 --natural 8000 --minutes 88 --decoder-minutes 5 --test-images 1000 \
        --seed 1
    PYTHONPATH=src python scripts/train_default.py --out runs/stage3.pt --float32 \
        --init runs/stage2.pt --renew --no-decoder --schedule cosine --dropout 0 \
        --learning-rate 2e-4 --natural 8000 --minutes 80 --decoder-minutes 5 --test-images 1000 \
        --seed 2 --exact-share 0.5
    PYTHONPATH=src python scripts/train_default.py --out runs/stage5.pt \
        --init runs/stage3.pt --renew --no-decoder --schedule cosine --dropout 0 \
        --learning-rate 1e-4 --natural 8000 --minutes 75 --decoder-minutes 5 --test-images 1000 \
        --seed 4 --exact-share 0.5
    PYTHONPATH=src python scripts/train_default.py --out runs/stage8.pt \
        --init runs/stage5.pt --renew --no-decoder --schedule cosine --dropout 0 \
        --learning-rate 1e-4 --natural 8000 --minutes 75 --decoder-minutes 5 --test-images 1000 \
        --seed 7 --exact-share 0.5 --clean-share 0.2 --touching 0.3

(the shipped model's five stages, docs/default-model.md; stage8.pt is copied to
src/napari_twinvae/models/default.pt).

The recipe (core.pretrain): a Twin-VAE from scratch on synthetic images of both presets; the
natural twin sees a hardened, realistic rendering (core.realism; --clean-share leaves some
clean), the synthetic twin the clean one; --touching draws some cells as daughters beside
another. Everything is seeded, on the CPU, deterministic for a seed and precision (bfloat16
convolutions where the CPU computes them, unless --float32); the budget is wall-clock minutes,
so a faster machine trains more epochs. The weights are stored in half precision (about 23 MB)
and load as float32. The last line is a JSON object with the training summary and the accuracy
and MAE of the saved model on fresh synthetic test sets (clean and hardened, per preset).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path


def evaluate(checkpoint, n: int, seed: int, views: int | None = None) -> dict:
    """Accuracy and MAE of the natural twin on fresh synthetic images, as a user counts them
    (with ``views`` orientations averaged; default: as counting does)."""
    from napari_twinvae.core.metrics import count_metrics
    from napari_twinvae.core.predict import DEFAULT_VIEWS, count
    from napari_twinvae.core.pretrain import synthetic_test_sets

    report = {}
    for (preset, kind), (images, counts) in synthetic_test_sets(n, seed).items():
        result = count(
            images, checkpoint, batch_size=128, device="cpu", views=views or DEFAULT_VIEWS
        )
        metrics = count_metrics(result.estimates[:, 0], counts)
        report[f"{preset}_{kind}"] = {k: round(v, 4) for k, v in metrics.items()}
    return report


def _without_folders(argv: list[str]) -> str:
    """The command line with file names only: a summary holds no path of the training machine."""
    return " ".join(Path(arg).name if "/" in arg else arg for arg in argv)


def run_stage(
    natural, config, normalization, seed: int, renew=False, clean_share=0.0, touching=0.0
):
    from napari_twinvae.core.pretrain import HardenedMix, PresetMix
    from napari_twinvae.core.train import Training

    renewal = (
        HardenedMix(seed, normalization=normalization, clean_share=clean_share, touching=touching)
        if renew
        else None
    )
    synthetic = PresetMix(seed, touching=touching)
    training = Training(natural, config, normalization, synthetic=synthetic, renew=renewal)
    for progress in training.run():
        if progress.validation is not None:
            v = progress.validation
            losses = " ".join(
                f"{twin} rec {terms['reconstruction']:.4f} reg {terms['regression']:.3f}"
                for twin, terms in progress.losses.items()
            )
            print(
                f"epoch {progress.epoch}: validation accuracy {v['accuracy']:.3f} "
                f"MAE {v['mae']:.3f} ({progress.elapsed_s / 60:.1f} min) {losses}",
                file=sys.stderr,
                flush=True,
            )
    return training.result


def parser_of() -> argparse.ArgumentParser:
    from napari_twinvae.core.config import HEADS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--minutes", type=float, default=75.0, help="wall-clock training budget")
    parser.add_argument("--epochs", type=int, default=None, help="epoch limit (default: none)")
    parser.add_argument("--natural", type=int, default=12000, help="hardened images (natural twin)")
    parser.add_argument(
        "--renew",
        action="store_true",
        help="new hardened training images every epoch (the held-out 10 %% stay)",
    )
    parser.add_argument("--synthetic-ratio", type=float, default=1.0)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--schedule", default="constant", help="constant | cosine")
    parser.add_argument("--dropout", type=float, default=None, help="this stage's dropout rate")
    parser.add_argument(
        "--decoder-minutes",
        type=float,
        default=0.0,
        help="then train only the decoders this long (counting path frozen), for the "
        "reconstruction views after a decoder-free stage",
    )
    parser.add_argument(
        "--exact-share",
        type=float,
        default=0.0,
        help="share of each batch kept pixel-exact (flips and quarter turns only)",
    )
    parser.add_argument(
        "--clean-share",
        type=float,
        default=0.0,
        help="share of the natural twin's images (training and held out) left unhardened",
    )
    parser.add_argument(
        "--touching",
        type=float,
        default=0.0,
        help="share of the training cells drawn as daughters touching an earlier cell, as in "
        "a growing chamber (both twins)",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--regressor-delay", type=int, default=1)
    parser.add_argument("--no-decoder", action="store_true", help="train without decoders")
    parser.add_argument(
        "--freeze",
        default="none",
        help="core.freezing's strategy; density trains everything behind a density head for "
        "the decoders while its counts stay as they are",
    )
    parser.add_argument(
        "--reconstruction-weight", type=float, default=None, help="C_rec (default: LossWeights')"
    )
    parser.add_argument("--kld-weight", type=float, default=None, help="C_kld (same)")
    parser.add_argument("--regression-weight", type=float, default=None, help="C_reg (same)")
    parser.add_argument(
        "--reconstruction-kind",
        default=None,
        help="mse, bce or cells (MSE weighted toward the cells; default: LossWeights')",
    )
    parser.add_argument(
        "--head", choices=HEADS, default="regressor", help="what counts (default: %(default)s)"
    )
    parser.add_argument(
        "--init", default="scratch", help="scratch, or a checkpoint to continue (a later stage)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--float32",
        action="store_true",
        help="no bfloat16 autocast, even where the CPU or GPU computes it (the first three "
        "stages of the shipped model predate it)",
    )
    parser.add_argument("--test-images", type=int, default=1000, help="per preset, for the report")
    return parser


def loss_weights_of(args: argparse.Namespace):
    """The LossWeights a command line asks for: LossWeights' own where it names none."""
    from napari_twinvae.core.config import LossWeights

    given = {
        "reconstruction": args.reconstruction_weight,
        "kld": args.kld_weight,
        "regression": args.regression_weight,
        "reconstruction_kind": args.reconstruction_kind,
    }
    return LossWeights(**{name: value for name, value in given.items() if value is not None})


def main(argv=None) -> int:
    args = parser_of().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from napari_twinvae.core.data import Augmentation
    from napari_twinvae.core.intensity import Normalization
    from napari_twinvae.core.io import load_checkpoint, save_checkpoint
    from napari_twinvae.core.pretrain import realistic_set
    from napari_twinvae.core.train import TrainConfig

    normalization = Normalization()
    natural = realistic_set(
        args.natural,
        seed=args.seed,
        normalization=normalization,
        clean_share=args.clean_share,
        touching=args.touching,
    )
    config = TrainConfig(
        init=args.init,
        freeze=args.freeze,
        loss=loss_weights_of(args),
        decoder=not args.no_decoder,
        head=args.head,  # explicit: the rendered scenes carry their cells
        epochs=args.epochs,
        minutes=args.minutes,
        synthetic_ratio=args.synthetic_ratio,
        learning_rate=args.learning_rate,
        schedule=args.schedule,
        dropout=args.dropout,
        batch_size=args.batch_size,
        augmentation=Augmentation(exact_share=args.exact_share),
        regressor_delay=args.regressor_delay,
        validation_share=0.1,
        seed=args.seed,
        device=args.device,
        mixed_precision=not args.float32,
    )
    result = run_stage(
        natural, config, normalization, args.seed, renew=args.renew,
        clean_share=args.clean_share, touching=args.touching,
    )  # fmt: skip
    summary = result.summary()
    summary["recipe"] = {
        "command": "python scripts/train_default.py " + _without_folders(argv or sys.argv[1:]),
        "natural": f"{args.natural} hardened synthetic images of both presets (core.pretrain)"
        + (f", {args.clean_share:.0%} of them left clean" if args.clean_share else "")
        + (f", {args.touching:.0%} of the cells touching another" if args.touching else "")
        + (", the training ones new every epoch" if args.renew else ""),
        "synthetic": "fresh clean images of both presets every epoch"
        + (f", {args.touching:.0%} of the cells touching another" if args.touching else ""),
    }
    save_checkpoint(args.out, result.model, normalization=normalization, summary=summary, half=True)
    if args.decoder_minutes > 0:
        # The counts are settled; the decoders learn to draw what the encoders see.
        decoders = dataclasses.replace(
            config, init=str(args.out), freeze="counting", decoder=True, epochs=None,
            minutes=args.decoder_minutes, regressor_delay=0, dropout=0.0,
        )  # fmt: skip
        result = run_stage(natural, decoders, normalization, args.seed, touching=args.touching)
        summary["decoder_stage"] = result.summary()
    save_checkpoint(args.out, result.model, normalization=normalization, summary=summary, half=True)
    # Report on what ships: the half-precision file, loaded as float32.
    checkpoint = load_checkpoint(args.out)
    report = evaluate(checkpoint, args.test_images, args.seed + 1) if args.test_images else {}
    print(json.dumps({"out": str(args.out), "best": result.best, "stopped": result.stopped,
                      "synthetic_test": report}))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
