"""Fixed windows of character ids."""

import numpy as np

__all__ = ["windows"]


def windows(ids, context, offset=0):
    """Non-overlapping windows of ``context + 1`` ids: ``(x [n, context], y [n, context])``, ``y`` shifted by one.

    Each document's ids are windowed separately (pass one array per
    document, or one array); windows never cross a document boundary.
    """
    if isinstance(ids, np.ndarray):
        ids = [ids]
    xs, ys = [], []
    for doc in ids:
        doc = np.asarray(doc, np.int32)[offset:]
        n = (len(doc) - 1) // context
        if n < 1:
            continue
        body = doc[:n * context + 1]
        xs.append(body[:-1].reshape(n, context))
        ys.append(body[1:].reshape(n, context))
    if not xs:
        raise ValueError(f"The text is shorter than one window of {context + 1} characters.")
    return np.concatenate(xs), np.concatenate(ys)
