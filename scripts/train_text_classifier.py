#!/usr/bin/env python
"""The text-classification job: which play is a passage from? A BERT teacher and a 1/4-size student, four ways.

    python scripts/train_text_classifier.py                                         # the bundled eight plays
    python scripts/train_text_classifier.py --data ../shared/data/shakespeare.txt   # the 38 plays
    python scripts/train_text_classifier.py --help                                  # every flag and its default

The same code as `kdkeras train-classifier` (kdkeras/cli/train_classifier.py).
"""

import sys

from kdkeras.cli.train_classifier import main

if __name__ == "__main__":
    sys.exit(main())
