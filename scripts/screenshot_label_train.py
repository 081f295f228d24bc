"""Make docs/label_train.png: a real napari window with the Label & train dock after a short run.

The synthetic phase-contrast sample stands in for a user's movie: its true centres on every
third frame are "clicked" into the dock's annotation layer, and a few epochs train from scratch
on the CPU (about a minute), so the table, the plot and the status show real numbers. Needs a
display; on a headless machine run it under Xvfb:

    PYTHONPATH=src xvfb-run -a python scripts/screenshot_label_train.py
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import napari
import numpy as np
from qtpy.QtWidgets import QApplication, QFileDialog
from skimage import io
from skimage.transform import resize

PLUGIN = "napari-twinvae"
ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "label_train.png")
    parser.add_argument("--width", type=int, default=1200, help="width of the saved PNG")
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()

    viewer = napari.Viewer(title="napari-twinvae: label & train")
    viewer.window.resize(1500, 1180)
    viewer.open_sample(PLUGIN, "synthetic_pc")
    image, truth = viewer.layers
    viewer.layers.remove(truth)  # the user's clicks stand in for the true centres
    _, dock = viewer.window.add_plugin_dock_widget(PLUGIN, "Label & train")
    dock.labeling.image.value = image
    clicked = truth.data[truth.data[:, 0] % 3 == 0]
    dock.labeling.ensure_annotation().add(clicked)

    dock._start_model.value = "scratch"
    dock._decoder.value = False
    dock._epochs.value = args.epochs
    dock._batch.value = 16
    dock._device.value = "cpu"
    with tempfile.TemporaryDirectory() as folder:
        saved = str(Path(folder) / "twinvae-synthetic_phase_contrast.pt")
        QFileDialog.getSaveFileName = lambda *a, **k: (saved, "")  # no modal dialog here
        dock.start_training()
        while dock._runner.running:
            QApplication.processEvents()
            time.sleep(0.02)
    dock.labeling.table.native.selectRow(5)
    dock.labeling.go_to_frame(15)
    viewer.layers.selection.active = dock.labeling.cells.value
    viewer.reset_view()
    # the "saved the model to ..." toast names this script's scratch folder, not a user's
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.close()
    for _ in range(10):  # let Qt lay out the docks and draw the canvas
        QApplication.processEvents()
    shot = viewer.screenshot(canvas_only=False, flash=False)
    shown = f"{dock.labeling.frame_info.value} | {dock.status.value}"
    viewer.close()

    height = round(shot.shape[0] * args.width / shot.shape[1])
    small = resize(shot[..., :3], (height, args.width), anti_aliasing=True, preserve_range=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    io.imsave(args.out, np.rint(small).astype(np.uint8), check_contrast=False)
    print(f"{args.out} ({args.out.stat().st_size // 1024} KB), the dock shows '{shown}'")


if __name__ == "__main__":
    main()
