"""Random augmentation that is repeatable and consistent for teacher and student.

"Patient and consistent" distillation (Beyer et al., 2022, *Knowledge
distillation: A good teacher is patient and consistent*) runs the teacher
online on the very same randomly augmented view that the student sees, for
many epochs. This module augments *batches* inside a ``tf.data`` pipeline, so
the Distiller's online teacher and the student get the same images by
construction. Every random number is drawn with a stateless op from
``(seed, step)``, where ``step`` counts batches from the start of training:
a run resumed at epoch ``k`` (see :func:`kdkeras.data.fixed_epoch_order`)
sees exactly the augmented batches of the run it continues.

Two augmentations are provided, and :func:`augment` chains them:

- :func:`random_affine`: a random shift, rotation and zoom per image (one
  projective-transform op per batch, bilinear, zero fill);
- :func:`mixup`: each image blended with another image of the batch,
  ``lam * x_i + (1 - lam) * x_j`` with ``lam ~ Beta(a, a)`` per image, and
  the one-hot labels blended with the same ``lam`` (Zhang et al., 2018).

With mixup the labels become soft (one-hot mixtures, ``float32 [batch,
classes]``), so a hard-label loss must be categorical (``"cce"``), not sparse.
"""

import math

import tensorflow as tf

__all__ = ["random_affine", "mixup", "augment", "one_hot_labels"]


def _is_finite_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_range(name, value, low, high):
    if not (_is_finite_number(value) and low <= value <= high):
        raise ValueError(f"{name} must be a number in [{low}, {high}]; received {value!r}.")


def _check_affine(max_shift, max_rotation, max_zoom):
    _check_range("max_shift", max_shift, 0.0, 1.0)
    _check_range("max_rotation", max_rotation, 0.0, 180.0)
    _check_range("max_zoom", max_zoom, 0.0, 0.9)


def _check_strength(name, value):
    if not (_is_finite_number(value) and value > 0):
        raise ValueError(f"{name} must be a positive number; received {value!r}.")


def _affine_matrices(height, width, shift, rotation, zoom):
    """Projective-transform rows mapping output pixel coordinates to input ones.

    ``shift`` is ``[n, 2]`` in pixels (dx, dy), ``rotation`` ``[n]`` in radians
    and ``zoom`` ``[n]`` (1 = unchanged, > 1 enlarges), all about the image centre.
    """
    cx = (tf.cast(width, tf.float32) - 1.0) / 2.0
    cy = (tf.cast(height, tf.float32) - 1.0) / 2.0
    cos, sin = tf.cos(rotation) / zoom, tf.sin(rotation) / zoom
    # input = R(-angle) / zoom @ (output - centre - shift) + centre
    ox = cx + shift[:, 0]
    oy = cy + shift[:, 1]
    a0, a1 = cos, sin
    a2 = cx - cos * ox - sin * oy
    b0, b1 = -sin, cos
    b2 = cy + sin * ox - cos * oy
    zeros = tf.zeros_like(a0)
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def _apply_transforms(images, transforms):
    """Samples every image at its transform's input coordinates (bilinear, 0 outside); float32."""
    shape = tf.shape(images)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(images, tf.float32), transforms=transforms,
        output_shape=shape[1:3], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="CONSTANT")


def random_affine(images, seed, max_shift=0.1, max_rotation=10.0, max_zoom=0.0):
    """Shifts, rotates and zooms every image of a batch at random.

    Args:
        images: Float tensor ``[batch, height, width, channels]``.
        seed: Shape ``[2]`` integer tensor for the stateless random ops.
        max_shift: Largest shift, as a fraction of the height and width
            (uniform in ``[-max_shift, max_shift]`` per axis).
        max_rotation: Largest rotation in degrees (uniform in both directions).
        max_zoom: Largest relative zoom (uniform in ``[1 - max_zoom, 1 + max_zoom]``).

    Returns:
        The transformed images, same shape and dtype; pixels moved in from
        outside the image are 0.
    """
    _check_affine(max_shift, max_rotation, max_zoom)
    images = tf.convert_to_tensor(images)
    if images.shape.rank != 4:
        raise ValueError(f"random_affine expects [batch, height, width, channels]; received {images.shape}.")
    shape = tf.shape(images)
    n, height, width = shape[0], shape[1], shape[2]
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3)
    size = tf.cast(tf.stack([width, height]), tf.float32)
    shift = tf.random.stateless_uniform([n, 2], seeds[0], -max_shift, max_shift) * size
    angle = tf.random.stateless_uniform([n], seeds[1], -max_rotation, max_rotation) * (math.pi / 180.0)
    zoom = tf.random.stateless_uniform([n], seeds[2], 1.0 - max_zoom, 1.0 + max_zoom)
    transforms = _affine_matrices(height, width, shift, angle, zoom)
    return tf.cast(_apply_transforms(images, transforms), images.dtype)


def one_hot_labels(labels, num_classes):
    """Integer labels ``[batch]`` as float32 one-hot ``[batch, num_classes]`` (soft labels pass through)."""
    labels = tf.convert_to_tensor(labels)
    if labels.dtype.is_integer:
        return tf.one_hot(tf.reshape(labels, [-1]), num_classes, dtype=tf.float32)
    return tf.cast(labels, tf.float32)


def mixup(images, labels, seed, strength=0.2, num_classes=10):
    """Blends every image (and its one-hot label) with another image of the batch.

    Image ``i`` is mixed with image ``n - 1 - i`` (the batch is already in a
    random order), with its own ``lam ~ Beta(strength, strength)``.

    Args:
        images: Float tensor ``[batch, ...]``.
        labels: Integer labels ``[batch]`` or soft labels ``[batch, num_classes]``.
        seed: Shape ``[2]`` integer tensor for the stateless random ops.
        strength: The Beta distribution's parameter ``a > 0``; small values
            keep most images close to one of the two, 1 mixes uniformly.
        num_classes: Number of classes of integer labels.

    Returns:
        ``(mixed_images, mixed_soft_labels)``; the labels are float32 ``[batch, num_classes]``.
    """
    _check_strength("mixup strength", strength)
    images = tf.convert_to_tensor(images)
    soft = one_hot_labels(labels, num_classes)
    n = tf.shape(images)[0]
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2)
    g1 = tf.random.stateless_gamma([n], seeds[0], alpha=strength)
    g2 = tf.random.stateless_gamma([n], seeds[1], alpha=strength)
    lam = g1 / tf.maximum(g1 + g2, 1e-12)
    lam_images = tf.cast(tf.reshape(lam, [-1] + [1] * (images.shape.rank - 1)), images.dtype)
    mixed_images = lam_images * images + (1 - lam_images) * tf.reverse(images, [0])
    lam_labels = lam[:, None]
    mixed_labels = lam_labels * soft + (1 - lam_labels) * tf.reverse(soft, [0])
    return mixed_images, mixed_labels


def augment(dataset, seed, *, max_shift=0.1, max_rotation=10.0, max_zoom=0.0, mixup_strength=None,
            num_classes=10, initial_step=0):
    """Augments a batched ``(x, y[, sample_weight])`` dataset, batch by batch.

    Batch ``k`` of the stream (counted from ``initial_step``) is augmented with
    random numbers drawn from ``(seed, k)`` only, so the result does not depend
    on how often the dataset was iterated before. Use it after
    :func:`kdkeras.data.fixed_epoch_order` and pass
    ``initial_step = initial_epoch * steps_per_epoch`` when resuming.

    For distillation, give the augmented dataset to the Distiller with the
    teacher online (do not cache teacher logits): the teacher then sees
    exactly the student's view.

    Args:
        dataset: Batched ``tf.data.Dataset`` of ``(x, y)`` or ``(x, y, w)``;
            ``x`` is ``[batch, height, width, channels]``.
        seed: Integer seed.
        max_shift, max_rotation, max_zoom: See :func:`random_affine`
            (all zero turns the affine step off).
        mixup_strength: ``None`` for no mixup, else the Beta parameter of :func:`mixup`.
        num_classes: Number of classes (for mixup's one-hot labels).
        initial_step: Index of the first batch of ``dataset`` in the whole run.

    Returns:
        The augmented dataset. With mixup, ``y`` is float32 one-hot mixtures;
        sample weights pass through unchanged (a blend keeps the weight of
        the image it is made from).

    Example:

    ```python
    ds, steps = kdkeras.data.fixed_epoch_order(kdkeras.make_dataset(x, y, 64), epochs=40, seed=0)
    ds = kdkeras.augment.augment(ds, seed=0, mixup_strength=0.2)
    distiller.fit(ds, epochs=40, steps_per_epoch=steps)   # teacher online
    ```
    """
    _check_affine(max_shift, max_rotation, max_zoom)
    use_affine = max_shift > 0 or max_rotation > 0 or max_zoom > 0
    if mixup_strength is not None:
        _check_strength("mixup_strength (or None)", mixup_strength)
    if not isinstance(initial_step, int) or initial_step < 0:
        raise ValueError(f"initial_step must be a non-negative integer; received {initial_step!r}.")
    base = tf.constant(int(seed), tf.int64)

    def apply(step, batch):
        if not isinstance(batch, tuple) or len(batch) not in (2, 3):
            raise ValueError("augment expects batches (x, y) or (x, y, sample_weight).")
        x, y = batch[0], batch[1]
        step_seed = tf.stack([base, step])
        affine_seed, mix_seed = tf.unstack(tf.random.experimental.stateless_split(step_seed, 2))
        if use_affine:
            x = random_affine(x, affine_seed, max_shift, max_rotation, max_zoom)
        if mixup_strength is not None:
            x, y = mixup(x, y, mix_seed, mixup_strength, num_classes)
        return (x, y) + tuple(batch[2:])

    return dataset.enumerate(start=initial_step).map(apply, num_parallel_calls=tf.data.AUTOTUNE)
