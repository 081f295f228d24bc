"""Subcommands of the ``napari-twinvae`` command line, one module each (see ``cli.py``)."""
