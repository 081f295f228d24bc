"""Count cells in label-free time-lapse microscopy with a Twin-VAE, inside napari.

Importing this package loads neither torch nor Qt: the model core lives in
:mod:`napari_twinvae.core`, the widgets are loaded by napari through the manifest.
"""

__version__ = "0.1.0"
