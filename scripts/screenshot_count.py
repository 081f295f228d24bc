"""Make docs/count.png: napari with the "Count cells" dock, its layers and the growth curve.

The scene: three synthetic phase-contrast chambers side by side in one 60-frame field of view
(the plugin's sample time series with three seeds), one rectangle per chamber in a Shapes layer,
counted with the shipped default model (or the checkpoint ``--model`` names).

Needs a display; on a headless machine run it under Xvfb:

    PYTHONPATH=src xvfb-run -a python scripts/screenshot_count.py [--model CKPT]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import napari
import numpy as np
from qtpy.QtWidgets import QApplication
from skimage import io
from skimage.transform import resize

from napari_twinvae.core.synthetic import synthetic_timeseries

PLUGIN = "napari-twinvae"
ROOT = Path(__file__).resolve().parents[1]
GAP = 24  # pixels of empty chip between two chambers


def field_of_view(n_frames: int = 60) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Three sample chambers in one uint16 stack, their rectangles and their true counts."""
    series = [synthetic_timeseries("pc", n_frames, seed=seed) for seed in (0, 1, 2)]
    width = 3 * 128 + 4 * GAP
    stack = np.full((n_frames, 128 + 2 * GAP, width), 0.35, dtype=np.float32)
    rectangles = []
    for i, batch in enumerate(series):
        left = GAP + i * (128 + GAP)
        stack[:, GAP : GAP + 128, left : left + 128] = batch.images
        rectangles.append(
            np.array([[GAP, left], [GAP, left + 128], [GAP + 128, left + 128], [GAP + 128, left]])
        )
    frames = np.rint(stack * 4000).astype(np.uint16)  # like a 12-bit camera
    return frames, rectangles, [b.counts for b in series]


def _save(shot: np.ndarray, path: Path, width: int) -> None:
    height = round(shot.shape[0] * width / shot.shape[1])
    small = resize(shot[..., :3], (height, width), anti_aliasing=True, preserve_range=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    io.imsave(path, np.rint(small).astype(np.uint8), check_contrast=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "count.png")
    parser.add_argument("--width", type=int, default=1200, help="width of the saved PNG")
    parser.add_argument("--model", type=Path, help="a checkpoint (default: the default model)")
    parser.add_argument("--frame", type=int, default=44, help="the frame shown")
    parser.add_argument(
        "--views-out",
        type=Path,
        help="also save the frame, its reconstruction and its synthetic view in a grid",
    )
    args = parser.parse_args()

    frames, rectangles, truth = field_of_view()
    viewer = napari.Viewer(title="napari-twinvae: count cells")
    viewer.window.resize(1500, 900)
    viewer.add_image(frames, name="three chambers", contrast_limits=(0, 4000))
    viewer.add_shapes(rectangles, shape_type="rectangle", name="chambers", visible=False)
    _, dock = viewer.window.add_plugin_dock_widget(PLUGIN, "Count cells")
    if args.model is not None:
        dock.use_model(args.model)
    dock._chambers.value = viewer.layers["chambers"]
    dock._count_button.native.click()
    while dock._runner.running or dock.result is None:
        QApplication.processEvents()
        time.sleep(0.02)
    viewer.dims.set_current_step(0, args.frame)
    viewer.reset_view()
    for _ in range(10):  # let Qt lay out the docks and draw the canvas
        QApplication.processEvents()
    shot = viewer.screenshot(canvas_only=False, flash=False)
    counts = dock.result.counts
    _save(shot, args.out, args.width)
    if args.views_out:
        # The image with its counts, its reconstruction and its synthetic view, one per grid
        # cell, top to bottom: napari fills cells with `stride` layers each from the bottom of
        # the layer list (the chambers layer, hidden, pads the middle cell).
        image = "three chambers"
        order = [image, f"{image} counts", f"{image} reconstruction", "chambers"]
        order.append(f"{image} synthetic view")
        for position, name in enumerate(order):
            viewer.layers.move(viewer.layers.index(name), position)
            viewer.layers[name].visible = name != "chambers"
        grid = viewer.canvas.grid
        grid.enabled, grid.shape, grid.stride = True, (3, 1), 2
        viewer.reset_view()
        for _ in range(10):
            QApplication.processEvents()
        _save(viewer.screenshot(canvas_only=True, flash=False), args.views_out, 700)
    viewer.close()
    errors = np.abs(counts - np.stack(truth, axis=1))
    print(
        f"{args.out} ({args.out.stat().st_size // 1024} KB); frame {args.frame}: counts "
        f"{counts[args.frame].tolist()}, true {[int(t[args.frame]) for t in truth]}; "
        f"over all frames MAE {errors.mean():.2f}, exact {np.mean(errors == 0):.0%}"
    )


if __name__ == "__main__":
    main()
