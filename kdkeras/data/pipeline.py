"""Input pipelines over in-memory arrays: shuffled batches, and epochs in a fixed order.

- :func:`make_dataset` batches ``(x, y[, sample_weight])`` arrays, reshuffled
  every epoch.
- :func:`batched_dataset` does the same for any structure of arrays of equal
  length, such as the cached-logit elements of :func:`kdkeras.data.cache.teacher_logit_arrays`.
- :func:`fixed_epoch_order` makes every epoch's order a function of ``(seed,
  epoch)``, so a resumed run sees exactly the batches of an uninterrupted one.

Both take the arrays themselves: what a pipeline is made from is always
passed explicitly. Random augmentation of the batches is
:func:`kdkeras.augment.augment`, applied to the result.
"""

import numpy as np
import tensorflow as tf

__all__ = ["batched_dataset", "fixed_epoch_order", "make_dataset", "steps_per_epoch", "stratified_indices",
           "validation_split"]


def _check_batch_size(batch_size):
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer; received {batch_size!r}.")


def _as_tensors(elements):
    """The elements as tensors, checked to share a non-zero length; returns ``(tensors, n)``."""
    if isinstance(elements, tf.data.Dataset):
        raise TypeError(
            "Pass the arrays the pipeline is made from, e.g. (x, y) or (x, y, sample_weight), not a "
            "tf.data.Dataset: an in-memory pipeline needs them to order every epoch itself."
        )
    tensors = tf.nest.map_structure(tf.convert_to_tensor, elements)
    lengths = {int(t.shape[0]) if t.shape.rank else -1 for t in tf.nest.flatten(tensors)}
    if len(lengths) != 1:
        raise ValueError(f"The arrays must all have the same number of examples; received lengths {sorted(lengths)}.")
    n = lengths.pop()
    if n <= 0:
        raise ValueError("Cannot make a dataset from an empty array (0 examples).")
    return tensors, n


def stratified_indices(y, fraction, seed):
    """Indices ``(kept, held_out)`` of a seeded split that holds out ``fraction`` of every class.

    A function of the labels and the seed alone: the same on every machine and
    every run. Both index arrays are sorted.
    """
    y = np.asarray(y)
    if y.ndim != 1 or len(y) == 0:
        raise ValueError(f"y must be a non-empty 1-D array of labels; received shape {y.shape}.")
    if not 0 < fraction < 1:
        raise ValueError(f"The held-out fraction must be in (0, 1); received {fraction!r}.")
    rng = np.random.default_rng(seed)
    kept, held_out = [], []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        n_out = int(round(len(idx) * fraction))
        held_out.append(idx[:n_out])
        kept.append(idx[n_out:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held_out))


def validation_split(x, y, size=0.1, seed=0):
    """Carves a stratified validation split out of training arrays.

    Settings (temperature, alpha, budget, augmentation) are chosen on this
    split; the test split is only for reporting. The split is a function of
    the labels and ``seed``.

    Args:
        x: Training inputs (any array indexable by an index array).
        y: Integer labels, shape ``(n,)``.
        size: The validation share: a fraction in ``(0, 1)``, or a number of
            examples (each class gives the same share, rounded, so the total is
            within ``num_classes / 2`` of it).
        seed: Seed of the split.

    Returns:
        ``((x_train, y_train), (x_val, y_val))``.

    Example:

    ```python
    (x, y), test = kdkeras.load_mnist_arrays("path/to/mnist.npz")
    train, val = kdkeras.data.validation_split(x, y, size=10_000, seed=0)
    ```
    """
    y = np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length: {len(x)} and {len(y)}.")
    fraction = size / len(y) if isinstance(size, (int, np.integer)) and size >= 1 else size
    kept, held_out = stratified_indices(y, fraction, seed)
    return (x[kept], y[kept]), (x[held_out], y[held_out])


def steps_per_epoch(num_examples, batch_size):
    """Batches per epoch (the last one may be smaller)."""
    return -(-num_examples // batch_size)


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
    elements = (x, y) if sample_weight is None else (x, y, sample_weight)
    return batched_dataset(elements, batch_size, shuffle, seed)


def batched_dataset(elements, batch_size, shuffle=False, seed=None):
    """Batches of a structure of in-memory arrays of equal length, optionally reshuffled every epoch.

    Shuffles and batches *indices*, then gathers each batch with one op, instead
    of shuffling and re-batching every example as a separate tf.data element:
    the same batches in distribution, at a fraction of the input pipeline's CPU
    cost (which competes with training on a small machine).
    """
    _check_batch_size(batch_size)
    tensors, n = _as_tensors(elements)
    index = tf.data.Dataset.range(n)
    if shuffle:
        index = index.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    return _gather_batches(index.batch(batch_size), tensors)


def _gather_batches(index_batches, tensors):
    """Turns a dataset of index batches into prefetched batches of ``tensors`` (one gather each)."""
    return index_batches.map(
        lambda i: tf.nest.map_structure(lambda t: tf.gather(t, i), tensors),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    ).prefetch(tf.data.AUTOTUNE)


def fixed_epoch_order(elements, batch_size, epochs, seed, initial_epoch=0):
    """Epochs ``initial_epoch .. epochs - 1`` of in-memory arrays, each in a fixed order.

    ``tf.data``'s reshuffling depends on how many times a dataset has been
    iterated, so a run resumed at epoch ``k`` (``keras.callbacks.BackupAndRestore``)
    would see a different order than the run it continues. Here the order of
    epoch ``e`` is a pure function of ``(seed, e)`` (a stateless shuffle), and
    all remaining epochs come as one stream: pass the returned
    ``steps_per_epoch`` to ``fit`` so that Keras keeps one iterator across epochs.
    A resumed run that starts at ``initial_epoch = k`` then sees exactly the
    batches that the uninterrupted run saw from epoch ``k`` on.

    Args:
        elements: ``(x, y)``, ``(x, y, sample_weight)`` or any structure of
            arrays of equal length (for example cached-logit elements).
        batch_size: Batch size.
        epochs: Total number of epochs of the run.
        seed: Integer seed of the order.
        initial_epoch: First epoch to produce.

    Returns:
        ``(dataset, steps_per_epoch)``.

    Example:

    ```python
    ds, steps = kdkeras.data.fixed_epoch_order((x, y), 64, epochs=20, seed=0, initial_epoch=done)
    model.fit(ds, epochs=20, steps_per_epoch=steps, callbacks=[backup])
    ```
    """
    _check_batch_size(batch_size)
    if not (isinstance(epochs, int) and isinstance(initial_epoch, int) and 0 <= initial_epoch < epochs):
        raise ValueError(
            f"Need integers 0 <= initial_epoch < epochs; received initial_epoch={initial_epoch!r}, "
            f"epochs={epochs!r}."
        )
    tensors, n = _as_tensors(elements)
    seed = tf.constant(int(seed), tf.int64)

    def epoch_batches(epoch):
        order = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed=tf.stack([seed, epoch]))
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size)

    ds = _gather_batches(tf.data.Dataset.range(initial_epoch, epochs).flat_map(epoch_batches), tensors)
    return ds, steps_per_epoch(n, batch_size)
