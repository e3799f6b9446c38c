"""The ``kdkeras`` command's entry point (kept for ``python -m kdkeras`` and older imports).

The subcommands live in :mod:`kdkeras.cli`; :func:`main` is :func:`kdkeras.cli.dispatch.main`.
"""

from kdkeras.cli.dispatch import main

__all__ = ["main"]
