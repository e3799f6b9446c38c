"""Atomic file writes: write to a temporary name beside the target, then rename."""

import contextlib
import os
import tempfile


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path in the target's directory (same extension).

    When the block completes, the temporary file replaces ``path`` in one
    rename; when it raises (or is interrupted), the temporary file is removed
    and any previous ``path`` stays as it was.
    """
    directory, name = os.path.split(os.path.abspath(os.fspath(path)))
    stem, ext = os.path.splitext(name)
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.tmp-", suffix=ext, dir=directory)
    os.close(fd)
    try:
        yield tmp
        # mkstemp creates the file private (0600); give it the mode a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
