"""``python -m kdkeras COMMAND ...``: the ``kdkeras`` command."""

import sys

from kdkeras.cli.dispatch import main

if __name__ == "__main__":
    sys.exit(main())
