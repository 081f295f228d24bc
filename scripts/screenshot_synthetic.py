"""Make docs/synthetic.png: a real napari window with the synthetic sample and the widget.

Needs a display; on a headless machine run it under Xvfb:

    PYTHONPATH=src xvfb-run -a python scripts/screenshot_synthetic.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import napari
import numpy as np
from qtpy.QtWidgets import QApplication
from skimage import io
from skimage.transform import resize

PLUGIN = "napari-twinvae"
ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "synthetic.png")
    parser.add_argument("--width", type=int, default=1100, help="width of the saved PNG")
    args = parser.parse_args()

    viewer = napari.Viewer(title="napari-twinvae: synthetic cells")
    viewer.window.resize(1400, 820)
    viewer.open_sample(PLUGIN, "synthetic_pc")
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Synthetic cells")
    viewer.dims.set_current_step(0, 45)
    viewer.reset_view()
    for _ in range(5):  # let Qt lay out the docks and draw the canvas
        QApplication.processEvents()
    shot = viewer.screenshot(canvas_only=False, flash=False)
    shown = widget.frame_info.value
    viewer.close()

    height = round(shot.shape[0] * args.width / shot.shape[1])
    small = resize(shot[..., :3], (height, args.width), anti_aliasing=True, preserve_range=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    io.imsave(args.out, np.rint(small).astype(np.uint8), check_contrast=False)
    print(f"{args.out} ({args.out.stat().st_size // 1024} KB), the widget shows '{shown}'")


if __name__ == "__main__":
    main()
