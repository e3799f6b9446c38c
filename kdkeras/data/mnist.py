"""MNIST sources: tensorflow-datasets, the bundled sample, npz files.

Sources for :func:`load_mnist` / :func:`load_mnist_arrays`:

- ``"tfds"``: ``tfds.load("mnist")`` (60,000 train / 10,000 test). When the
  data is not prepared locally and the download host cannot be reached, it
  fails within seconds with an error that names the offline alternatives
  (tensorflow-datasets on its own retries for minutes).
- ``"sample"``: the bundled 5,000 real MNIST digits shipped with kdkeras,
  split deterministically and stratified into 4,000 train / 1,000 test.
- ``"auto"`` (default): ``"tfds"`` if it is prepared locally or can be
  downloaded, otherwise the bundled sample, with a warning.
- a path to an ``.npz`` file: Keras' ``mnist.npz`` layout (``x_train``,
  ``y_train``, ``x_test``, ``y_test``) or ``x``/``y`` arrays (split like the
  sample). Loaded with ``allow_pickle=False``.

Images come out as float32 in ``[0, 1]`` with shape ``(28, 28, 1)``; labels as
int32.
"""

import concurrent.futures
import logging
import os
import socket
import tokenize
import warnings
import zipfile
from importlib import resources
from struct import error as struct_error

import numpy as np

from kdkeras.data.pipeline import make_dataset, stratified_indices

logger = logging.getLogger(__name__)

__all__ = [
    "DatasetUnavailableError",
    "IMAGE_SHAPE",
    "NUM_CLASSES",
    "load_mnist",
    "load_mnist_arrays",
    "sample_path",
]

NUM_CLASSES = 10
IMAGE_SHAPE = (28, 28)
SAMPLE_TEST_FRACTION = 0.2
_SPLIT_SEED = 20150309  # fixed: the sample split never depends on user seeds

# Where tensorflow-datasets downloads MNIST from; probed before a download so
# that an offline machine fails fast instead of retrying for minutes.
_DOWNLOAD_PROBE = ("storage.googleapis.com", 443)
_OFFLINE_HINT = (
    'Offline alternatives: load_mnist(source="sample") uses the 5,000 real MNIST '
    "digits bundled with kdkeras; source=\"path/to/mnist.npz\" reads Keras' "
    "mnist.npz layout; or prepare tfds' mnist on a connected machine and pass its "
    "data_dir."
)


class DatasetUnavailableError(RuntimeError):
    """Raised when a requested dataset source can not be loaded here."""


def sample_path():
    """Returns the path of the bundled 5,000-digit MNIST sample (``mnist_5k.npz``)."""
    return str(resources.files("kdkeras").joinpath("datasets", "mnist_5k.npz"))


# --------------------------------------------------------------------------- #
# Array validation and splitting
# --------------------------------------------------------------------------- #
def _prepare_images(x, where):
    x = np.asarray(x)
    if x.dtype.kind not in "uif":
        raise ValueError(
            f"{where}: images must be a numeric array; received dtype {x.dtype}. "
            "Expected uint8 pixels in [0, 255] or floats in [0, 1]."
        )
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim != 3 or tuple(x.shape[1:]) != IMAGE_SHAPE:
        raise ValueError(
            f"{where}: images must have shape (N, 28, 28) or (N, 28, 28, 1); "
            f"received shape {x.shape}."
        )
    if x.shape[0] == 0:
        raise ValueError(f"{where}: the image array is empty (shape {x.shape}).")
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        raise ValueError(f"{where}: images contain NaN or infinite values.")
    low, high = x.min(), x.max()
    if low < 0 or high > 255:
        raise ValueError(
            f"{where}: pixel values must be in [0, 255] (or [0, 1] as floats); received "
            f"values from {low} to {high}."
        )
    integer_pixels = x.dtype.kind in "ui"
    x = x.astype(np.float32)
    if integer_pixels or high > 1.0:
        x = x / 255.0
    return x[..., None]


def _prepare_labels(y, n, where, num_classes=NUM_CLASSES):
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"{where}: labels must be a 1-D array; received shape {y.shape}.")
    if y.dtype.kind not in "ui":
        if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise ValueError(
                f"{where}: labels must be integers 0..{num_classes - 1}; "
                f"received dtype {y.dtype}."
            )
    if len(y) != n:
        raise ValueError(f"{where}: {n} images but {len(y)} labels; they must match.")
    bad = (y < 0) | (y >= num_classes)
    if np.any(bad):
        raise ValueError(
            f"{where}: labels must be in [0, {num_classes}); received "
            f"{np.unique(y[bad])[:10].tolist()} ({int(bad.sum())} labels out of range)."
        )
    return y.astype(np.int32)


def _validated(x, y, where):
    x = _prepare_images(x, where)
    return x, _prepare_labels(y, len(x), where)


def fixed_split(y, test_fraction=SAMPLE_TEST_FRACTION):
    """``(train_indices, test_indices)`` of the fixed stratified split the bundled sample uses.

    Deterministic: the same indices on every machine, whatever the user's seed.
    """
    return stratified_indices(y, test_fraction, _SPLIT_SEED)


def tfds_host_reachable(timeout=10.0):
    """Whether tensorflow-datasets' download host answers within ``timeout`` seconds."""
    return _can_reach(*_DOWNLOAD_PROBE, timeout)


def read_npz(path):
    """Every array of an ``.npz`` file (``allow_pickle=False``); any unreadable file is a ``ValueError`` naming it."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except ValueError as e:
        # numpy raises ValueError for object arrays when allow_pickle=False.
        raise ValueError(
            f"Could not read {path!r} safely: {e}. kdkeras loads npz files with "
            "allow_pickle=False; store plain numeric arrays."
        ) from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError, SyntaxError, MemoryError,
            TypeError, IndexError, struct_error, tokenize.TokenError) as e:
        # A corrupt .npy header makes numpy raise any of these (found by fuzzing).
        raise ValueError(
            f"{path!r} is not a readable .npz file ({type(e).__name__}: {e}). "
            "Expected a numpy .npz archive with x_train/y_train/x_test/y_test or x/y."
        ) from None


def _load_npz(path):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"MNIST data file not found: {path!r}. Pass an existing .npz file, "
            'source="sample" for the bundled digits, or source="tfds".'
        )
    arrays = read_npz(path)
    keys = set(arrays)
    if {"x_train", "y_train", "x_test", "y_test"} <= keys:
        train = _validated(arrays["x_train"], arrays["y_train"], f"{path} [train]")
        test = _validated(arrays["x_test"], arrays["y_test"], f"{path} [test]")
        return train, test
    if {"x", "y"} <= keys:
        x, y = _validated(arrays["x"], arrays["y"], path)
        tr, te = fixed_split(y)
        if len(tr) == 0 or len(te) == 0:
            raise ValueError(
                f"{path}: {len(x)} examples are too few to split 80/20 into non-empty train "
                "and test sets; store more examples, or x_train/y_train/x_test/y_test."
            )
        return (x[tr], y[tr]), (x[te], y[te])
    raise ValueError(
        f"{path!r} has arrays {sorted(keys)}; expected x_train, y_train, x_test, "
        "y_test (Keras' mnist.npz layout) or x and y."
    )


# --------------------------------------------------------------------------- #
# tensorflow-datasets, with a fast offline check
# --------------------------------------------------------------------------- #
def _can_reach(host, port, timeout):
    """True if a TCP connection to host:port opens within ``timeout`` seconds.

    Name resolution runs in a worker thread so that a hanging DNS lookup is
    bounded by the same timeout.
    """

    def connect():
        with socket.create_connection((host, port), timeout=timeout):
            return True

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(connect).result(timeout=timeout)
    except Exception as e:  # noqa: BLE001 - any failure means "not reachable"
        logger.info("Download host %s:%s not reachable: %s", host, port, e)
        return False
    finally:
        pool.shutdown(wait=False)


def _tfds_arrays(data_dir=None, timeout=10.0):
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:  # pragma: no cover - it is a dependency
        raise DatasetUnavailableError(
            f"tensorflow-datasets could not be imported ({e}). {_OFFLINE_HINT}"
        ) from e
    builder = tfds.builder("mnist", data_dir=data_dir)
    if not builder.is_prepared():
        host = _DOWNLOAD_PROBE[0]
        if not tfds_host_reachable(timeout):
            raise DatasetUnavailableError(
                "MNIST is not prepared locally for tensorflow-datasets "
                f"(data_dir={builder.data_dir!r}) and the download host {host} "
                f"could not be reached within {timeout:g} s. {_OFFLINE_HINT}"
            )
        logger.info("Downloading MNIST with tensorflow-datasets into %s", builder.data_dir)
        builder.download_and_prepare()
    out = []
    for split in ("train", "test"):
        # Large batches, then concatenate (batch_size=-1 aborts inside mocked tfds).
        ds = builder.as_dataset(split=split, as_supervised=True).batch(10_000)
        xs, ys = zip(*tfds.as_numpy(ds))
        out.append(_validated(np.concatenate(xs), np.concatenate(ys), f"tfds mnist [{split}]"))
    return tuple(out)


def load_mnist_arrays(source="auto", data_dir=None, timeout=10.0, return_source=False):
    """Loads MNIST as NumPy arrays.

    Args:
        source: ``"auto"``, ``"tfds"``, ``"sample"`` or a path to an ``.npz`` file
            (see the module docstring).
        data_dir: tensorflow-datasets data directory (``None``: its default).
        timeout: Seconds to wait for the download host before treating the
            machine as offline.
        return_source: Also return the name of the source actually used
            (``"tfds"``, ``"sample"`` or the npz path).

    Returns:
        ``((x_train, y_train), (x_test, y_test))``; images float32 in ``[0, 1]``
        of shape ``(N, 28, 28, 1)``, labels int32. With ``return_source``, a
        pair ``(arrays, source_name)``.

    Raises:
        DatasetUnavailableError: ``source="tfds"`` while offline.
        FileNotFoundError / ValueError: a missing, corrupt or malformed file.
    """
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            'source must be "auto", "tfds", "sample" or a path to an .npz file; '
            f"received {source!r}."
        )
    src = os.fspath(source)
    if src == "sample":
        arrays, used = _load_npz(sample_path()), "sample"
    elif src == "tfds":
        arrays, used = _tfds_arrays(data_dir, timeout), "tfds"
    elif src == "auto":
        try:
            arrays, used = _tfds_arrays(data_dir, timeout), "tfds"
        except DatasetUnavailableError as e:
            warnings.warn(
                f"Full MNIST is unavailable ({e}) -- falling back to the bundled "
                "5,000-digit MNIST sample (4,000 train / 1,000 test). Results on it "
                "are not full-MNIST results.",
                stacklevel=2,
            )
            arrays, used = _load_npz(sample_path()), "sample"
    else:
        arrays, used = _load_npz(src), src
    return (arrays, used) if return_source else arrays


def load_mnist(source="auto", batch_size=64, shuffle=True, seed=0, data_dir=None, timeout=10.0):
    """Loads MNIST as ``(train_ds, test_ds)`` batched ``tf.data`` pipelines.

    Args:
        source: ``"auto"`` (tfds, else the bundled sample with a warning),
            ``"tfds"``, ``"sample"`` or a path to an ``.npz`` file.
        batch_size: Batch size of both datasets.
        shuffle: Reshuffle the training set every epoch.
        seed: Shuffle seed.
        data_dir: tensorflow-datasets data directory.
        timeout: Seconds to wait for the download host when offline.

    Returns:
        ``(train_ds, test_ds)`` yielding ``(images, labels)``: images float32
        ``(batch, 28, 28, 1)`` in ``[0, 1]``, labels int32.

    Example:

    ```python
    train_ds, test_ds = kdkeras.load_mnist(source="sample", batch_size=64)
    ```
    """
    (x_train, y_train), (x_test, y_test) = load_mnist_arrays(source, data_dir, timeout)
    train = make_dataset(x_train, y_train, batch_size, shuffle=shuffle, seed=seed)
    test = make_dataset(x_test, y_test, batch_size, shuffle=False)
    return train, test


