"""The package and its core stay light: checked in a fresh interpreter."""

import json
import subprocess
import sys


def _modules_after(statement: str) -> set[str]:
    code = f"import sys, json; {statement}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout))


def test_package_import_loads_neither_torch_nor_qt():
    loaded = _modules_after("import napari_twinvae")
    assert not {"torch", "napari", "qtpy", "PyQt6", "magicgui"} & loaded


def test_core_loads_no_gui_module():
    loaded = _modules_after(
        "import napari_twinvae.core as c; c.TwinVAE; c.load_checkpoint; "
        "import napari_twinvae.core.losses, napari_twinvae.core.metrics, napari_twinvae.core.io"
    )
    assert "torch" in loaded
    gui = {
        m
        for m in loaded
        if m.split(".")[0] in {"napari", "qtpy", "PyQt6", "PyQt5", "PySide6", "magicgui", "vispy"}
    }
    assert not gui
