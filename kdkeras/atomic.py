"""Atomic writes: build a file or directory under a temporary name beside the target, then rename.

A reader (or a resumed run) sees either the previous version or the complete
new one, never a half-written file, whatever interrupts the write.
"""

import contextlib
import os
import shutil
import tempfile

__all__ = ["atomic_directory", "atomic_path", "save_model", "write_text"]


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path in the target's directory (same extension).

    When the block completes, the temporary file replaces ``path`` in one
    rename; when it raises (or is interrupted), the temporary file is removed
    and any previous ``path`` stays as it was. Missing parent directories are created.
    """
    directory, name = os.path.split(os.path.abspath(os.fspath(path)))
    stem, ext = os.path.splitext(name)
    os.makedirs(directory, exist_ok=True)
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


@contextlib.contextmanager
def atomic_directory(path):
    """Yields a path (not yet existing) in the target's parent for a new directory.

    When the block completes, the new directory takes the place of ``path``:
    an existing ``path`` is first moved aside (one rename), the new one is
    renamed into place, and the old one is deleted. When the block raises, the
    partial directory is removed and ``path`` is untouched.
    """
    path = os.path.abspath(os.fspath(path))
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
    new = os.path.join(work, "new")
    try:
        yield new
        if os.path.lexists(path):
            os.replace(path, os.path.join(work, "old"))
        os.replace(new, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def write_text(path, text):
    """Writes ``text`` (UTF-8) to ``path`` atomically, flushed to disk."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def save_model(model, path):
    """``model.save(path)`` atomically."""
    with atomic_path(path) as tmp:
        model.save(tmp)
