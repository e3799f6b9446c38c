"""Teacher and student CNNs for MNIST-sized images, with logits out.

The two designs follow the classic Keras MNIST convnet article:

- teacher: Conv2D(32, 3x3, ReLU) -> MaxPool(2) -> Conv2D(64, 3x3, ReLU) ->
  MaxPool(2) -> Flatten -> Dense(128, ReLU) -> Dense(num_classes)
- student: Conv2D(16, 3x3, ReLU) -> MaxPool(2) -> Flatten -> Dense(32, ReLU)
  -> Dense(num_classes)

:func:`build_mlp` builds the fully connected nets of Hinton, Vinyals and Dean
(2015): 784-1200-1200-10 with dropout as the large net, 784-800-800-10 as the
small one.

Both end in a linear layer (logits): distillation needs logits, not
probabilities. Every layer has a stable name (``conv1``, ``pool1``, ...,
``logits``) so that users can address it, for example for feature hints.
"""

import keras

__all__ = ["build_teacher", "build_student", "build_cnn", "build_mlp"]


def _check_positive_ints(name, values):
    for v in values:
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"{name} must contain positive integers; received {values!r}.")


def build_cnn(
    conv_filters,
    dense_units,
    *,
    input_shape=(28, 28, 1),
    num_classes=10,
    kernel_size=3,
    seed=None,
    name="cnn",
):
    """Builds a plain CNN: [Conv2D -> MaxPool] x n -> Flatten -> Dense -> logits.

    Args:
        conv_filters: Sequence of filter counts, one Conv2D + MaxPool block each.
        dense_units: Width of the hidden Dense layer.
        input_shape: Image shape ``(height, width, channels)``.
        num_classes: Number of output logits.
        kernel_size: Convolution kernel size.
        seed: Optional integer; makes the initial weights reproducible.
        name: Model name.

    Returns:
        An uncompiled ``keras.Sequential`` model whose output is logits.
    """
    conv_filters = tuple(conv_filters)
    _check_positive_ints("conv_filters", conv_filters)
    _check_positive_ints("dense_units", (dense_units,))
    _check_positive_ints("num_classes", (num_classes,))
    if len(input_shape) != 3:
        raise ValueError(
            f"input_shape must be (height, width, channels); received {input_shape!r}."
        )

    def init(i):
        if seed is None:
            return "glorot_uniform"
        return keras.initializers.GlorotUniform(seed=seed + i)

    layers = [keras.Input(shape=tuple(input_shape), name="image")]
    for i, filters in enumerate(conv_filters, start=1):
        layers.append(
            keras.layers.Conv2D(
                filters,
                kernel_size,
                activation="relu",
                kernel_initializer=init(i),
                name=f"conv{i}",
            )
        )
        layers.append(keras.layers.MaxPooling2D(2, name=f"pool{i}"))
    n = len(conv_filters)
    layers += [
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(
            dense_units, activation="relu", kernel_initializer=init(n + 1), name="dense"
        ),
        keras.layers.Dense(num_classes, kernel_initializer=init(n + 2), name="logits"),
    ]
    return keras.Sequential(layers, name=name)


def build_teacher(
    input_shape=(28, 28, 1),
    num_classes=10,
    conv_filters=(32, 64),
    dense_units=128,
    seed=None,
    name="teacher",
):
    """Builds the article's teacher CNN (about 225k parameters on MNIST).

    Args:
        input_shape: Image shape ``(height, width, channels)``.
        num_classes: Number of output logits.
        conv_filters: Filters of the two convolution blocks.
        dense_units: Width of the hidden Dense layer.
        seed: Optional integer for reproducible initial weights.
        name: Model name.

    Returns:
        An uncompiled ``keras.Sequential`` that outputs logits.

    Example:

    ```python
    teacher = kdkeras.build_teacher()
    teacher.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"])
    ```
    """
    return build_cnn(conv_filters, dense_units, input_shape=input_shape, num_classes=num_classes, seed=seed, name=name)


def build_student(
    input_shape=(28, 28, 1),
    num_classes=10,
    conv_filters=(16,),
    dense_units=32,
    seed=None,
    name="student",
):
    """Builds the article's small student CNN (about 87k parameters on MNIST).

    Arguments and result as in :func:`build_teacher` (one convolution block
    of 16 filters and a Dense layer of 32 by default).

    Example:

    ```python
    student = kdkeras.build_student(seed=0)
    student.summary()
    ```
    """
    return build_cnn(conv_filters, dense_units, input_shape=input_shape, num_classes=num_classes, seed=seed, name=name)


def build_mlp(
    hidden_units=(800, 800),
    *,
    dropout=0.0,
    input_dropout=0.0,
    input_shape=(28, 28, 1),
    num_classes=10,
    seed=None,
    name="mlp",
):
    """Builds a ReLU multilayer perceptron with logits out: Flatten -> [Dense -> Dropout] x n -> logits.

    ``build_mlp((1200, 1200), dropout=0.5, input_dropout=0.2)`` is the large
    net of Hinton et al. (2015, section 3); ``build_mlp((800, 800))`` is their
    small net, unregularized.

    Args:
        hidden_units: Widths of the hidden layers.
        dropout: Dropout rate after every hidden layer (0: none).
        input_dropout: Dropout rate on the flattened input (0: none).
        input_shape: Input shape; flattened first.
        num_classes: Number of output logits.
        seed: Optional integer for reproducible initial weights and dropout masks.
        name: Model name.

    Returns:
        An uncompiled ``keras.Sequential`` whose output is logits; layers are
        named ``flatten``, ``dense1``, ``dense2``, ..., ``logits``.
    """
    hidden_units = tuple(hidden_units)
    _check_positive_ints("hidden_units", hidden_units)
    _check_positive_ints("num_classes", (num_classes,))
    for rate_name, rate in (("dropout", dropout), ("input_dropout", input_dropout)):
        if not (isinstance(rate, (int, float)) and 0 <= rate < 1):
            raise ValueError(f"{rate_name} must be in [0, 1); received {rate!r}.")

    def init(i):
        return "glorot_uniform" if seed is None else keras.initializers.GlorotUniform(seed=seed + i)

    layers = [keras.Input(shape=tuple(input_shape), name="image"), keras.layers.Flatten(name="flatten")]
    if input_dropout:
        layers.append(keras.layers.Dropout(input_dropout, seed=seed, name="input_dropout"))
    for i, units in enumerate(hidden_units, start=1):
        layers.append(keras.layers.Dense(units, activation="relu", kernel_initializer=init(i), name=f"dense{i}"))
        if dropout:
            layers.append(keras.layers.Dropout(dropout, seed=None if seed is None else seed + i,
                                               name=f"dropout{i}"))
    layers.append(keras.layers.Dense(num_classes, kernel_initializer=init(len(hidden_units) + 1), name="logits"))
    return keras.Sequential(layers, name=name)
