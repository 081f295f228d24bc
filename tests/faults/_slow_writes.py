"""Run the command line with every atomic write held open for a second, announced on stderr.

    python tests/faults/_slow_writes.py count ...

When a temporary file has been written but not yet synced and renamed over its final name, this
prints ``writing`` on stderr and waits a second, so that a test can kill the process in the middle
of writing a result, every time.
"""

import os
import sys
import time

from napari_twinvae.core import io

_fsync = os.fsync


class _SlowOs:
    """``os`` as ``core.io`` sees it, with an ``fsync`` that announces itself and waits."""

    def __getattr__(self, name):
        return getattr(os, name)

    @staticmethod
    def fsync(fd):
        print("writing", file=sys.stderr, flush=True)
        time.sleep(1.0)
        _fsync(fd)


io.os = _SlowOs()

if __name__ == "__main__":
    from napari_twinvae.cli import main

    sys.exit(main(sys.argv[1:]))
