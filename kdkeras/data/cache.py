"""The teacher-logit cache: the teacher runs once, and the Distiller trains on its stored logits.

The teacher is frozen, so its logits for un-augmented inputs never change.
The cache produces the batch format that :mod:`kdkeras.distiller` defines
(``({"inputs": x, "teacher_logits": t}, y[, sample_weight])``); it is only
valid when the inputs are not randomly augmented.
"""

import logging
import os

import keras
import tensorflow as tf

from kdkeras import checks, language
from kdkeras.atomic import atomic_directory
from kdkeras.data import top_k as top_k_cache
from kdkeras.data.pipeline import batched_dataset
from kdkeras.distiller import cached_batch

logger = logging.getLogger(__name__)

__all__ = ["cache_teacher_logits", "teacher_logit_arrays"]


def teacher_logit_arrays(teacher, arrays, batch_size=256, dtype="float32", verbose=0, forward=None):
    """Runs the teacher over in-memory arrays once; returns the cached-batch elements.

    Args:
        teacher: The trained teacher (logits out).
        arrays: ``(x, y)`` or ``(x, y, sample_weight)``.
        batch_size: Examples per teacher call.
        dtype: Storage dtype of the logits, ``"float32"`` or ``"float16"``.
        verbose: 1 shows a Keras progress bar.
        forward: Optional compiled ``forward(x)`` of the teacher (default: one is made).

    Returns:
        ``(cached_batch(x, logits), y[, sample_weight])`` as tensors, the same
        ``x`` tensor the arrays gave (no copy): pass it to
        :func:`kdkeras.data.fixed_epoch_order` or :func:`kdkeras.data.batched_dataset`.
    """
    if dtype not in ("float32", "float16"):
        raise ValueError(f'dtype must be "float32" or "float16"; received {dtype!r}.')
    if not isinstance(arrays, (tuple, list)) or len(arrays) not in (2, 3):
        raise TypeError(f"arrays must be (x, y) or (x, y, sample_weight); received {type(arrays).__name__}.")
    if forward is None:
        forward = tf.function(lambda x: teacher(x, training=False), reduce_retracing=True)
    x, y, *w = (tf.convert_to_tensor(a) for a in arrays)
    n = int(x.shape[0])
    if n == 0:
        raise ValueError("The arrays are empty (0 examples): nothing to cache.")
    progbar = keras.utils.Progbar(-(-n // batch_size), verbose=verbose)
    parts = []
    for step, start in enumerate(range(0, n, batch_size)):
        parts.append(tf.cast(forward(x[start:start + batch_size]), dtype))
        progbar.update(step + 1)
    logger.info("Cached teacher logits for %d examples (%s).", n, dtype)
    return (cached_batch(x, tf.concat(parts, 0)), y, *w)


def cache_teacher_logits(
    teacher,
    data,
    *,
    batch_size=None,
    shuffle=True,
    seed=None,
    dtype=None,
    verbose=0,
    directory=None,
    shuffle_buffer=10_000,
    inference_batch_size=None,
    top_k=None,
    temperature=1.0,
    vocabulary_size=None,
    preprocessor=None,
):
    """Runs the teacher once over a dataset and returns batches that carry its logits.

    The result yields ``({"inputs": x, "teacher_logits": t}, y)`` (or
    ``(..., y, sample_weight)`` when the input carries sample weights), the
    batch format that :class:`kdkeras.Distiller` defines
    (:func:`kdkeras.distiller.cached_batch`); the Distiller then skips the
    teacher's forward pass. Training on it gives the same result as the online teacher
    on the same batches.

    Only valid when inputs are not randomly augmented: with random
    augmentation the teacher must see the same augmented view as the
    student, so keep the teacher online.

    Args:
        teacher: The trained teacher (logits out).
        data: A ``tf.data.Dataset`` of ``(x, y)`` or ``(x, y, sample_weight)``
            batches (iterated once), or those arrays themselves, ``(x, y)`` or
            ``(x, y, sample_weight)``; arrays are cached without a second copy
            of the images.
        batch_size: Batch size of the result; default: that of the first input
            batch (64 for arrays).
        shuffle: Reshuffle the cached examples every epoch.
        seed: Shuffle seed.
        dtype: Storage dtype of the logits, ``"float32"`` (default) or
            ``"float16"`` (half the memory; the losses still run in float32);
            with ``top_k``, of the log-probabilities (default ``"float16"``).
        verbose: 1 shows a Keras progress bar.
        directory: Optional new or empty directory. The examples and their
            logits are then written there (``tf.data.Dataset.save``), batch by
            batch, instead of being held in memory: for training sets that do
            not fit in RAM. The files are written to a temporary sibling and
            renamed when complete, so an interrupted build leaves no cache that
            looks finished. Reuse it later with ``tf.data.Dataset.load``.
        shuffle_buffer: With ``directory``: examples in the shuffle buffer
            (the in-memory cache always shuffles over the whole set).
        inference_batch_size: With arrays: examples per teacher call while
            the cache is built (default: ``batch_size``). The teacher runs in
            inference mode, so this changes only speed and memory, not the
            logits: larger calls amortise the per-call overhead of a small
            teacher, at the cost of the activations of one larger call. A
            dataset is run batch by batch as it comes.
        top_k: Language models: keep, per real token, only the teacher's
            ``top_k`` largest log-probabilities, their token ids and the exact
            log of the remaining (tail) mass, instead of full logits
            (:mod:`kdkeras.data.top_k`; about ``4 * top_k + 4`` bytes a token).
            The losses treat the tail as one bucket
            (:class:`kdkeras.losses.TopKTeacher`); with ``top_k`` equal to the
            vocabulary they equal the full-logit losses.
        temperature: With ``top_k``: the temperature of the stored
            log-probabilities; the Distiller must train at the same one.
        vocabulary_size: With ``top_k``: rank only the teacher's first
            ``vocabulary_size`` logits (padding rows of its vocabulary excluded).
        preprocessor: With ``top_k``: turns raw strings into token batches
            (default: the teacher's ``preprocessor``).

    Returns:
        A batched, prefetched ``tf.data.Dataset``.

    Example:

    ```python
    cached = kdkeras.cache_teacher_logits(teacher, (x_train, y_train), seed=0)
    distiller.fit(cached, epochs=10)  # the teacher does not run again
    ```
    """
    if top_k is not None:
        return _cache_top_k(teacher, data, top_k, batch_size, shuffle, seed, dtype or "float16", verbose, directory,
                            shuffle_buffer, inference_batch_size, temperature, vocabulary_size, preprocessor)
    dtype = dtype or "float32"
    if dtype not in ("float32", "float16"):
        raise ValueError(f'dtype must be "float32" or "float16"; received {dtype!r}.')
    size = inference_batch_size
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ValueError(f"inference_batch_size must be a positive integer; received {inference_batch_size!r}.")
    if isinstance(data, tf.data.Dataset) and size is not None:
        raise ValueError("inference_batch_size applies to arrays; a dataset is run batch by batch as it comes "
                         "(rebatch it, or pass the arrays).")
    if isinstance(data, tf.data.Dataset) and int(data.cardinality()) == 0:
        raise ValueError("The dataset is empty (cardinality 0): nothing to cache.")

    @tf.function(reduce_retracing=True)
    def forward(x):
        return teacher(x, training=False)

    if not isinstance(data, tf.data.Dataset):
        # In-memory arrays: run the teacher over them in order and reuse the very same
        # input tensors (no second copy of the images).
        if directory is not None:
            raise ValueError("directory= caches a tf.data.Dataset on disk; arrays are cached in memory.")
        elements = teacher_logit_arrays(teacher, data, batch_size=size or batch_size or 64, dtype=dtype,
                                        verbose=verbose, forward=forward)
        return batched_dataset(elements, batch_size or 64, shuffle, seed)

    dataset = data
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
    return batched_dataset(stacked, batch_size, shuffle, seed)


def _cache_top_k(teacher, data, k, batch_size, shuffle, seed, dtype, verbose, directory, shuffle_buffer,
                 inference_batch_size, temperature, vocabulary_size, preprocessor):
    """:func:`cache_teacher_logits` with ``top_k``: a language model's sparse teacher cache."""
    temperature = checks.check_temperature(temperature)
    if language.is_string_data(data):
        data = language.preprocess_strings(preprocessor or language.find_preprocessor(teacher), data,
                                           batch_size=inference_batch_size or batch_size)
    elif not isinstance(data, tf.data.Dataset):
        if not isinstance(data, (tuple, list)) or len(data) not in (2, 3):
            raise TypeError(f"data must be a dataset or (x, y[, sample_weight]); received {type(data).__name__}.")
        data = tf.data.Dataset.from_tensor_slices(tuple(data)).batch(inference_batch_size or batch_size or 64)
    elif inference_batch_size is not None:
        raise ValueError("inference_batch_size applies to arrays; a dataset is run batch by batch as it comes.")
    if int(data.cardinality()) == 0:
        raise ValueError("The dataset is empty (cardinality 0): nothing to cache.")
    if directory is not None:
        first_size = top_k_cache.save_top_k(teacher, data, directory, k, temperature, vocabulary_size, dtype,
                                            verbose)
        return top_k_cache.load_top_k(directory, batch_size or first_size, shuffle, seed, shuffle_buffer)
    cache = top_k_cache.teacher_top_k(teacher, data, k, temperature, vocabulary_size, dtype, verbose)
    return cache.dataset(batch_size, shuffle, seed)


def _cached_batches(forward, dataset, dtype, progbar):
    """Yields ``(({"inputs", "teacher_logits"}, y[, w]), batch_size)`` per input batch."""
    for step, batch in enumerate(dataset):
        x, y, w = keras.utils.unpack_x_y_sample_weight(batch)
        logits = tf.cast(forward(x), dtype)
        element = (cached_batch(x, logits), y)
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

    with atomic_directory(directory) as tmp:
        tf.data.Dataset.from_generator(generate, output_signature=spec).save(tmp)
    ds = tf.data.Dataset.load(directory).unbatch()
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    logger.info("Cached teacher logits on disk in %s (%s).", directory, dtype)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
