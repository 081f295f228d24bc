"""``python -m napari_twinvae`` runs the command line."""

import sys

from napari_twinvae.cli import main

sys.exit(main())
