"""napari widgets. napari, magicgui and qtpy are imported here only, never by ``core``."""
