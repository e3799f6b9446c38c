"""Any image classification data, made to fit any model: for ``kdkeras distill``.

:func:`load_image_data` reads

- ``"sample"``: the bundled 5,000 MNIST digits (4,000 train / 1,000 test);
- a path to an ``.npz`` file: Keras' layout (``x_train``, ``y_train``,
  ``x_test``, ``y_test``) or ``x``/``y`` (split 80/20, stratified and seeded);
  images ``(N, H, W)`` or ``(N, H, W, C)``, uint8 pixels or floats in [0, 1];
- a directory with one sub-directory of images per class
  (``keras.utils.image_dataset_from_directory``; split 80/20);
- ``"tfds:NAME"`` or ``"tfds:NAME:SPLIT"``: a tensorflow-datasets image
  classification set (``SPLIT`` trains, ``"test"`` tests when it exists).

Images come out as float32 in [0, 1], shape ``(N, H, W, C)``; labels as int32.
:class:`FitImages` is the Keras layer that resizes images and converts their
channels (grey <-> RGB) to what a model expects; a teacher whose input shape
differs from the student's is run behind one, so both see the same batches.
"""

import os

import keras
import numpy as np
import tensorflow as tf

from kdkeras.data import mnist
from kdkeras.data.mnist import load_mnist_arrays

__all__ = ["FitImages", "fit_images", "load_image_data", "with_input_shape"]



def _as_images(x, where):
    x = np.asarray(x)
    if x.dtype.kind not in "uif":
        raise ValueError(f"{where}: images must be numeric; received dtype {x.dtype}.")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4) or len(x) == 0:
        raise ValueError(f"{where}: images must have shape (N, height, width[, 1|3|4 channels]) with N > 0; "
                         f"received {x.shape}.")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
        raise ValueError(f"{where}: {int(bad.sum())} image(s) hold NaN or infinite values (the first is image "
                         f"{int(np.argmax(bad))}); remove or repair them before training.")
    if x.shape[-1] == 4:
        x = x[..., :3]  # drop alpha
    scale = 255.0 if x.dtype.kind in "ui" or float(np.max(x)) > 1.0 else 1.0
    return (x.astype(np.float32) / scale)


def _as_labels(y, n, where):
    y = np.asarray(y).reshape(-1)
    if y.dtype.kind not in "ui" or len(y) != n or (len(y) and y.min() < 0):
        raise ValueError(f"{where}: labels must be {n} non-negative integers; received {y.dtype} of shape "
                         f"{np.asarray(y).shape}.")
    return y.astype(np.int32)


def _split(x, y):
    """80/20, stratified, with the fixed seed the bundled sample is split by."""
    train, test = mnist.fixed_split(y)
    return (x[train], y[train]), (x[test], y[test])


def _from_npz(path):
    f = mnist.read_npz(path)
    keys = set(f)
    if {"x_train", "y_train", "x_test", "y_test"} <= keys:
        return ((_as_images(f["x_train"], path), _as_labels(f["y_train"], len(f["x_train"]), path)),
                (_as_images(f["x_test"], path), _as_labels(f["y_test"], len(f["x_test"]), path)))
    if {"x", "y"} <= keys:
        return _split(_as_images(f["x"], path), _as_labels(f["y"], len(f["x"]), path))
    raise ValueError(f"{path}: expected arrays x_train, y_train, x_test, y_test (or x, y); found {sorted(keys)}.")


def _from_directory(path, image_size):
    classes = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))
    if not classes:
        raise ValueError(f"{path}: no class folders with images inside (expected {path}/<class>/<image>).")
    try:
        ds = keras.utils.image_dataset_from_directory(path, labels="inferred", shuffle=False, batch_size=256,
                                                      image_size=image_size, verbose=False)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    xs, ys = [], []
    try:
        for images, labels in ds:
            xs.append(images.numpy())
            ys.append(labels.numpy())
    except tf.errors.InvalidArgumentError:
        bad = _unreadable_images(ds.file_paths)
        raise ValueError(f"{path}: {len(bad)} image file(s) cannot be decoded, for example {bad[0]!r}; remove or "
                         "repair them (files that are not images are refused rather than skipped, so that no "
                         "class silently loses examples).") from None
    if not xs:
        raise ValueError(f"{path}: the class folders hold no images.")
    x, y = np.concatenate(xs) / 255.0, np.concatenate(ys)
    if np.array_equal(x[..., 0], x[..., 1]) and np.array_equal(x[..., 0], x[..., 2]):
        x = x[..., :1]  # grey images, decoded as RGB
    return _split(_as_images(x, path), _as_labels(y, len(y), path))


def _unreadable_images(paths):
    """The files among ``paths`` that TensorFlow cannot decode as images."""
    bad = []
    for file in paths:
        try:
            tf.io.decode_image(tf.io.read_file(file), expand_animations=False)
        except tf.errors.InvalidArgumentError:
            bad.append(file)
    return bad or list(paths[:1])


def _from_tfds(spec):
    import tensorflow_datasets as tfds

    parts = spec.split(":")
    name, split = parts[1], (parts[2] if len(parts) > 2 else "train")
    try:
        builder = tfds.builder(name)
    except Exception as e:  # noqa: BLE001 - tfds raises several kinds for an unknown name
        raise ValueError(f"{spec}: tensorflow-datasets has no dataset {name!r} ({type(e).__name__}).") from None
    info_keys = builder.info.supervised_keys
    if not info_keys:
        raise ValueError(f"{spec}: {name!r} has no (image, label) supervised keys.")
    if not builder.is_prepared() and not mnist.tfds_host_reachable(timeout=10.0):
        raise ValueError(f"{spec}: not prepared locally and the download host cannot be reached "
                         "(tensorflow-datasets would retry for minutes). Prepare it on a connected machine, "
                         "or pass an .npz file or an image folder.")
    def arrays(which):
        xs, ys = [], []
        for x, y in tfds.as_numpy(tfds.load(name, split=which, as_supervised=True).batch(1024)):
            xs.append(x)
            ys.append(y)
        if not xs:
            raise ValueError(f"{spec}: the split {which!r} is empty.")
        x, y = np.concatenate(xs), np.concatenate(ys)
        return _as_images(x, spec), _as_labels(y, len(x), spec)

    train = arrays(split)
    if split != "test":
        # The split names are known only once the data is prepared (an unprepared builder lists none).
        try:
            return train, arrays("test")
        except ValueError:  # no "test" split: hold out a fifth of the training split
            pass
    return _split(*train)


def load_image_data(spec, image_size=None):
    """``((x_train, y_train), (x_test, y_test))`` for ``spec`` (see the module docstring).

    ``image_size`` ``(height, width)`` is used for image folders, whose files
    may differ in size; other sources keep their size (see :func:`fit_images`).
    """
    if spec == "sample":
        (x, y), (x_test, y_test) = load_mnist_arrays("sample")
        return (x, y), (x_test, y_test)
    if spec.startswith("tfds:"):
        return _from_tfds(spec)
    if os.path.isdir(spec):
        return _from_directory(spec, tuple(image_size or (64, 64)))
    if os.path.isfile(spec):
        return _from_npz(spec)
    raise ValueError(f"--data {spec!r}: not \"sample\", an .npz file, an image folder or tfds:NAME[:SPLIT].")


@keras.saving.register_keras_serializable(package="kdkeras")
class FitImages(keras.layers.Layer):
    """Resizes images to ``(height, width)`` and converts grey <-> RGB to ``channels``."""

    def __init__(self, height, width, channels, **kwargs):
        super().__init__(**kwargs)
        self.height, self.width, self.channels = int(height), int(width), int(channels)

    def call(self, images):
        images = keras.ops.cast(images, "float32")
        have = images.shape[-1]
        if have == 1 and self.channels == 3:
            images = keras.ops.repeat(images, 3, axis=-1)
        elif have == 3 and self.channels == 1:
            images = keras.ops.mean(images, axis=-1, keepdims=True)
        if tuple(images.shape[1:3]) != (self.height, self.width):
            images = keras.ops.image.resize(images, (self.height, self.width), interpolation="bilinear")
        return images

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.height, self.width, self.channels)

    def get_config(self):
        return {**super().get_config(), "height": self.height, "width": self.width, "channels": self.channels}


def _image_input_shape(model, role):
    shape = tuple(model.input_shape[1:]) if hasattr(model, "input_shape") else None
    if not shape or len(shape) != 3 or shape[-1] not in (1, 3) or None in shape:
        raise ValueError(f"The {role} {model.name!r} expects inputs of shape {shape}; kdkeras distill needs "
                         "image models with a fixed input (height, width, 1 or 3 channels).")
    return shape


def fit_images(x, model, role, batch_size=512):
    """Images resized and channel-converted to ``model``'s input shape, in batches."""
    height, width, channels = _image_input_shape(model, role)
    if x.shape[-1] not in (1, 3):
        raise ValueError(f"Images with {x.shape[-1]} channels cannot be made to fit the {role}'s {channels}.")
    layer = FitImages(height, width, channels)
    return np.concatenate([np.asarray(layer(x[i:i + batch_size])) for i in range(0, len(x), batch_size)])


def with_input_shape(teacher, input_shape, role="teacher"):
    """``teacher`` behind a :class:`FitImages` that takes images of ``input_shape``; itself if they fit."""
    target = _image_input_shape(teacher, role)
    if tuple(input_shape) == target:
        return teacher
    inputs = keras.Input(tuple(input_shape), name="image")
    outputs = teacher(FitImages(*target, name=f"fit_to_{role}")(inputs))
    return keras.Model(inputs, outputs, name=f"{teacher.name}_fitted")
