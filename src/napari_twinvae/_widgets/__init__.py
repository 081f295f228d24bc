"""napari widgets. napari, magicgui and qtpy are imported here only, never by ``core``."""

from napari_twinvae.core import threads

threads.quiet_waits()  # before a dock's imports load torch (core/threads.py says why)
