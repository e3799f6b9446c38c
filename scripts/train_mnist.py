#!/usr/bin/env python
"""The main job: teacher, scratch student and distilled student on MNIST.

    python scripts/train_mnist.py            # offline-safe defaults, a few minutes on 2 CPUs
    python scripts/train_mnist.py --help     # every flag and its default

The same code as `kdkeras train-mnist` and the console script `kdkeras-train-mnist` (kdkeras/cli/train_mnist.py).
"""

import sys

from kdkeras.cli.train_mnist import main

if __name__ == "__main__":
    sys.exit(main())
