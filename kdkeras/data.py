"""MNIST loading (tensorflow-datasets, bundled sample, npz files) and teacher-logit caching.

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
import shutil
import socket
import tempfile
import tokenize
import warnings
import zipfile
from importlib import resources
from struct import error as struct_error

import keras
import numpy as np
import tensorflow as tf

logger = logging.getLogger(__name__)

__all__ = [
    "INPUTS_KEY",
    "TEACHER_LOGITS_KEY",
    "split_cached_inputs",
    "load_mnist",
    "load_mnist_arrays",
    "make_dataset",
    "sample_path",
    "cache_teacher_logits",
    "fixed_epoch_order",
    "DatasetUnavailableError",
]

#: Key of the model inputs in a batch that carries cached teacher logits.
INPUTS_KEY = "inputs"
#: Key of the cached teacher logits in such a batch.
TEACHER_LOGITS_KEY = "teacher_logits"


def split_cached_inputs(x):
    """Splits a batch's inputs into ``(model inputs, cached teacher logits or None)``.

    Batches made by :func:`cache_teacher_logits` carry
    ``{"inputs": x, "teacher_logits": t}``; any other input is returned as is.
    """
    if isinstance(x, dict) and set(x) == {INPUTS_KEY, TEACHER_LOGITS_KEY}:
        return x[INPUTS_KEY], x[TEACHER_LOGITS_KEY]
    return x, None


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


def _stratified_split(y, test_fraction=SAMPLE_TEST_FRACTION):
    """Deterministic stratified split: the same indices on every machine."""
    rng = np.random.default_rng(_SPLIT_SEED)
    train_idx, test_idx = [], []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        n_test = int(round(len(idx) * test_fraction))
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    train_idx = np.sort(np.concatenate(train_idx))
    test_idx = np.sort(np.concatenate(test_idx))
    return train_idx, test_idx


def _load_npz(path):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"MNIST data file not found: {path!r}. Pass an existing .npz file, "
            'source="sample" for the bundled digits, or source="tfds".'
        )
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
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
    keys = set(arrays)
    if {"x_train", "y_train", "x_test", "y_test"} <= keys:
        train = _validated(arrays["x_train"], arrays["y_train"], f"{path} [train]")
        test = _validated(arrays["x_test"], arrays["y_test"], f"{path} [test]")
        return train, test
    if {"x", "y"} <= keys:
        x, y = _validated(arrays["x"], arrays["y"], path)
        tr, te = _stratified_split(y)
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
        host, port = _DOWNLOAD_PROBE
        if not _can_reach(host, port, timeout):
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


def make_dataset(x, y, batch_size=64, shuffle=False, seed=None, sample_weight=None):
    """Makes a batched, prefetched ``tf.data.Dataset`` from arrays.

    Args:
        x: Images.
        y: Labels.
        batch_size: Batch size.
        shuffle: Reshuffle every epoch.
        seed: Shuffle seed (repeatable order).
        sample_weight: Optional per-example weights, yielded as the third element.

    Returns:
        A dataset of ``(x, y)`` or ``(x, y, sample_weight)`` batches.
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer; received {batch_size!r}.")
    if len(x) == 0:
        raise ValueError("Cannot make a dataset from an empty array (0 examples).")
    elements = (x, y) if sample_weight is None else (x, y, sample_weight)
    return _batched_slices(elements, batch_size, shuffle, seed)


_SOURCE_ATTR = "_kdkeras_source_tensors"


def _batched_slices(elements, batch_size, shuffle, seed):
    """Batches of in-memory arrays, reshuffled every epoch.

    Shuffles and batches *indices*, then gathers each batch with one op, instead
    of shuffling and re-batching every example as a separate tf.data element:
    the same batches in distribution, at a fraction of the input pipeline's CPU
    cost (which competes with training on a small machine).
    """
    tensors = tf.nest.map_structure(tf.convert_to_tensor, elements)
    n = int(tf.nest.flatten(tensors)[0].shape[0])
    index = tf.data.Dataset.range(n)
    if shuffle:
        index = index.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    ds = _gather_batches(index.batch(batch_size), tensors)
    setattr(ds, _SOURCE_ATTR, (tensors, batch_size))
    return ds


def _gather_batches(index_batches, tensors):
    """Turns a dataset of index batches into prefetched batches of ``tensors`` (one gather each)."""
    return index_batches.map(
        lambda i: tf.nest.map_structure(lambda t: tf.gather(t, i), tensors),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    ).prefetch(tf.data.AUTOTUNE)


def fixed_epoch_order(dataset, epochs, seed, initial_epoch=0):
    """Epochs ``initial_epoch .. epochs - 1`` of an in-memory pipeline, each in a fixed order.

    ``tf.data``'s reshuffling depends on how many times a dataset has been
    iterated, so a run resumed at epoch ``k`` (``keras.callbacks.BackupAndRestore``)
    would see a different order than the run it continues. Here the order of
    epoch ``e`` is a pure function of ``(seed, e)`` (a stateless shuffle), and
    all remaining epochs come as one stream: pass the returned
    ``steps_per_epoch`` to ``fit`` so that Keras keeps one iterator across epochs.
    A resumed run that starts at ``initial_epoch = k`` then sees exactly the
    batches that the uninterrupted run saw from epoch ``k`` on.

    Args:
        dataset: A dataset made by :func:`make_dataset` or by the in-memory
            :func:`cache_teacher_logits` (it carries its source arrays).
        epochs: Total number of epochs of the run.
        seed: Integer seed of the order.
        initial_epoch: First epoch to produce.

    Returns:
        ``(dataset, steps_per_epoch)``.

    Example:

    ```python
    ds, steps = kdkeras.data.fixed_epoch_order(train_ds, epochs=20, seed=0, initial_epoch=done)
    model.fit(ds, epochs=20, steps_per_epoch=steps, callbacks=[backup])
    ```
    """
    source = getattr(dataset, _SOURCE_ATTR, None)
    if source is None:
        raise ValueError(
            "fixed_epoch_order needs a dataset made by kdkeras.make_dataset or the in-memory "
            "kdkeras.cache_teacher_logits (it reuses their arrays); received "
            f"{type(dataset).__name__} without them."
        )
    if not (isinstance(epochs, int) and isinstance(initial_epoch, int) and 0 <= initial_epoch < epochs):
        raise ValueError(
            f"Need integers 0 <= initial_epoch < epochs; received initial_epoch={initial_epoch!r}, "
            f"epochs={epochs!r}."
        )
    tensors, batch_size = source
    n = int(tf.nest.flatten(tensors)[0].shape[0])
    seed = tf.constant(int(seed), tf.int64)

    def epoch_batches(epoch):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(n, dtype=tf.int64), seed=tf.stack([seed, epoch])
        )
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size)

    ds = _gather_batches(tf.data.Dataset.range(initial_epoch, epochs).flat_map(epoch_batches), tensors)
    return ds, -(-n // batch_size)


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


# --------------------------------------------------------------------------- #
# Teacher-logit caching
# --------------------------------------------------------------------------- #
def cache_teacher_logits(
    teacher,
    dataset,
    *,
    batch_size=None,
    shuffle=True,
    seed=None,
    dtype="float32",
    verbose=0,
    directory=None,
    shuffle_buffer=10_000,
):
    """Runs the teacher once over a dataset and returns batches that carry its logits.

    The result yields ``({"inputs": x, "teacher_logits": t}, y)`` (or
    ``(..., y, sample_weight)`` when the input carries sample weights);
    :class:`kdkeras.Distiller` recognises this form and skips the teacher's
    forward pass. Training on it gives the same result as the online teacher
    on the same batches.

    Only valid when inputs are not randomly augmented: with random
    augmentation the teacher must see the same augmented view as the
    student, so keep the teacher online.

    Args:
        teacher: The trained teacher (logits out).
        dataset: A ``tf.data.Dataset`` of ``(x, y)`` or ``(x, y, sample_weight)``
            batches. It is iterated once.
        batch_size: Batch size of the result; default: that of the first input batch.
        shuffle: Reshuffle the cached examples every epoch.
        seed: Shuffle seed.
        dtype: Storage dtype of the logits, ``"float32"`` or ``"float16"``
            (half the memory; the losses still run in float32).
        verbose: 1 shows a Keras progress bar.
        directory: Optional new or empty directory. The examples and their
            logits are then written there (``tf.data.Dataset.save``), batch by
            batch, instead of being held in memory: for training sets that do
            not fit in RAM. The files are written to a temporary sibling and
            renamed when complete, so an interrupted build leaves no cache that
            looks finished. Reuse it later with ``tf.data.Dataset.load``.
        shuffle_buffer: With ``directory``: examples in the shuffle buffer
            (the in-memory cache always shuffles over the whole set).

    Returns:
        A batched, prefetched ``tf.data.Dataset``.

    Example:

    ```python
    cached = kdkeras.cache_teacher_logits(teacher, train_ds, seed=0)
    distiller.fit(cached, epochs=10)  # the teacher does not run again
    ```
    """
    if dtype not in ("float32", "float16"):
        raise ValueError(f'dtype must be "float32" or "float16"; received {dtype!r}.')
    if not isinstance(dataset, tf.data.Dataset):
        raise TypeError(
            f"dataset must be a tf.data.Dataset of (x, y) batches; received {type(dataset).__name__}."
        )
    if int(dataset.cardinality()) == 0:
        raise ValueError("The dataset is empty (cardinality 0): nothing to cache.")

    @tf.function(reduce_retracing=True)
    def forward(x):
        return teacher(x, training=False)

    source = getattr(dataset, _SOURCE_ATTR, None)
    if source is not None and directory is None:
        # A make_dataset() pipeline: run the teacher over its arrays in order and
        # reuse the very same input tensors (no second copy of the images).
        tensors, source_batch = source
        x, y, w = keras.utils.unpack_x_y_sample_weight(tensors)
        n = int(tf.shape(y)[0])
        progbar = keras.utils.Progbar(-(-n // source_batch), verbose=verbose)
        parts = []
        for step, start in enumerate(range(0, n, source_batch)):
            parts.append(tf.cast(forward(x[start : start + source_batch]), dtype))
            progbar.update(step + 1)
        elements = ({INPUTS_KEY: x, TEACHER_LOGITS_KEY: tf.concat(parts, 0)}, y)
        if w is not None:
            elements = elements + (w,)
        logger.info("Cached teacher logits for %d examples (%s).", n, dtype)
        return _batched_slices(elements, batch_size or source_batch, shuffle, seed)

    n_batches = int(dataset.cardinality())
    progbar = keras.utils.Progbar(n_batches if n_batches > 0 else None, verbose=verbose)
    if directory is not None:
        return _cache_on_disk(forward, dataset, directory, batch_size, shuffle, seed, dtype,
                              shuffle_buffer, progbar)
    # Any other dataset: keep each batch as it comes (tensors, no NumPy round trip),
    # then one concatenation.
    elements = [element for element, _ in _cached_batches(forward, dataset, dtype, progbar)]
    if not elements:
        raise ValueError("The dataset produced no batches: nothing to cache.")
    if batch_size is None:
        batch_size = int(tf.shape(elements[0][1])[0])
    stacked = tf.nest.map_structure(lambda *parts: tf.concat(parts, 0), *elements)
    del elements
    logger.info("Cached teacher logits for %d examples (%s).", int(tf.shape(stacked[1])[0]), dtype)
    return _batched_slices(stacked, batch_size, shuffle, seed)


def _cached_batches(forward, dataset, dtype, progbar):
    """Yields ``(({"inputs", "teacher_logits"}, y[, w]), batch_size)`` per input batch."""
    for step, batch in enumerate(dataset):
        x, y, w = keras.utils.unpack_x_y_sample_weight(batch)
        logits = tf.cast(forward(x), dtype)
        element = ({INPUTS_KEY: x, TEACHER_LOGITS_KEY: logits}, y)
        if w is not None:
            element = element + (w,)
        progbar.update(step + 1)
        yield element, int(tf.shape(logits)[0])


def _cache_on_disk(forward, dataset, directory, batch_size, shuffle, seed, dtype, shuffle_buffer, progbar):
    directory = os.fspath(directory)
    if os.path.exists(directory) and (not os.path.isdir(directory) or os.listdir(directory)):
        raise ValueError(
            f"directory {directory!r} exists and is not empty; give a new or empty directory "
            "for the teacher-logit cache (an existing cache is read with tf.data.Dataset.load)."
        )
    if shuffle and (not isinstance(shuffle_buffer, int) or shuffle_buffer < 1):
        raise ValueError(f"shuffle_buffer must be a positive integer; received {shuffle_buffer!r}.")
    batches = _cached_batches(forward, dataset, dtype, progbar)
    try:
        first, first_size = next(batches)
    except StopIteration:
        raise ValueError("The dataset produced no batches: nothing to cache.") from None
    if batch_size is None:
        batch_size = first_size
    spec = tf.nest.map_structure(
        lambda t: tf.TensorSpec([None] + list(t.shape[1:]), t.dtype), first
    )

    def generate():
        yield first
        for element, _ in batches:
            yield element

    parent = os.path.dirname(os.path.abspath(directory))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(directory))}.tmp-", dir=parent)
    try:
        tf.data.Dataset.from_generator(generate, output_signature=spec).save(tmp)
        if os.path.isdir(directory):
            os.rmdir(directory)  # empty, checked above
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    ds = tf.data.Dataset.load(directory).unbatch()
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    logger.info("Cached teacher logits on disk in %s (%s).", directory, dtype)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
