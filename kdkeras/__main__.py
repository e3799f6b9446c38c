"""``python -m kdkeras distill ...``: the ``kdkeras`` command."""

import sys

from kdkeras.commands import main

if __name__ == "__main__":
    sys.exit(main())
