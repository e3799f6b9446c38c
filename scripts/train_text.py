#!/usr/bin/env python
"""The text main job: teacher, scratch student and distilled student, character-level GPTs on Shakespeare.

    python scripts/train_text.py                                          # the bundled eight plays, offline
    python scripts/train_text.py --data ../shared/data/shakespeare.txt    # the 38 plays
    python scripts/train_text.py --help                                   # every flag and its default

The same code as `kdkeras train-text` (kdkeras/cli/train_text.py).
"""

import sys

from kdkeras.cli.train_text import main

if __name__ == "__main__":
    sys.exit(main())
