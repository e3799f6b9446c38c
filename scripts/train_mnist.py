#!/usr/bin/env python
"""The main job: teacher, scratch student and distilled student on MNIST.

    python scripts/train_mnist.py            # offline-safe defaults, a few minutes on 2 CPUs
    python scripts/train_mnist.py --help     # every flag and its default

The job itself is written top-down in kdkeras/cli.py, so that the installed
console script `kdkeras-train-mnist` runs the very same code.
"""

import contextlib
import os
import sys


@contextlib.contextmanager
def _quiet_native_stderr():
    """Hides TensorFlow's native start-up chatter (absl lines that no environment
    variable silences in TF 2.21) while it is imported; stderr is restored
    before anything else runs, so errors and warnings still show.
    Set KDKERAS_SHOW_TF_STARTUP=1 to see it."""
    if os.environ.get("KDKERAS_SHOW_TF_STARTUP"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _quiet_native_stderr():
        from kdkeras.cli import main
    sys.exit(main())
