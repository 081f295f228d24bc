"""Handing a model trained in Label & train to the "Count cells" dock.

The button and the Plugins menu share one Count cells dock: the open one is shown, else one is
opened under the name the menu gives it, so the menu finds it there later.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import npe2
from napari.utils.notifications import show_error
from qtpy.QtWidgets import QDockWidget

from napari_twinvae._widgets._count import CountDock
from napari_twinvae.core.io import CheckpointError

if TYPE_CHECKING:
    import napari

PLUGIN = "napari-twinvae"
COUNT_DOCK = "Count cells"


def hand_to_count_dock(viewer: napari.viewer.Viewer, model_path: Path | None) -> None:
    """Count with the saved model in the Count cells dock; a notification says why not (not
    saved yet, no such dock, a file it cannot use)."""
    if model_path is None:
        show_error("save the model first")
        return
    dock = count_dock(viewer)
    if not callable(getattr(dock, "use_model", None)):
        show_error(
            f"the '{COUNT_DOCK}' dock is not available in this installation; "
            f"the model is saved at {model_path}"
        )
        return
    try:
        dock.use_model(model_path)
    except (ValueError, OSError, CheckpointError) as err:
        show_error(f"could not use the model: {err}")


def count_dock(viewer: napari.viewer.Viewer):
    """The open Count cells dock (shown), else a new one under the name the Plugins menu
    gives it, so that the menu and the button share one dock; None when there is none."""
    window = viewer.window
    for widget in window.dock_widgets.values():
        if isinstance(widget, CountDock):
            _show_dock_of(widget.native)
            return widget
    try:
        display_name = npe2.PluginManager.instance().get_manifest(PLUGIN).display_name
    except KeyError:  # not registered with npe2 (a development checkout)
        display_name = None
    if display_name is None:
        try:
            return window.add_plugin_dock_widget(PLUGIN, COUNT_DOCK)[1]
        except (KeyError, ValueError, ImportError):
            return None
    dock = CountDock(viewer)
    window.add_dock_widget(dock, name=f"{COUNT_DOCK} ({display_name})")
    return dock


def _show_dock_of(widget) -> None:
    """Show and raise the dock that holds ``widget`` (the user may have hidden it)."""
    parent = widget
    while parent is not None and not isinstance(parent, QDockWidget):
        parent = parent.parentWidget()
    if parent is not None:
        parent.show()
        parent.raise_()
