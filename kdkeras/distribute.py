"""tf.distribute helpers: MultiWorkerMirroredStrategy with Keras 3 ``fit``.

Keras 3.15's TensorFlow trainer has two bugs that stop *any* model's ``fit`` and
``evaluate`` under ``MultiWorkerMirroredStrategy`` in multi-worker mode:

1. To learn the batch shapes for its symbolic build it reduces the first
   distributed batch with ``strategy.reduce("MEAN", batch)``; the collective
   reduce rejects a nested batch (``Attempt to convert a value (PerReplica...)``).
2. It reduces the step outputs with ``strategy.reduce("MEAN", v, axis=0)``, which
   fails on the scalar metric values every ``train_step`` returns.

:class:`kdkeras.Distiller` avoids both by itself. For a plain Keras model (a
teacher, or a student trained from scratch) call :func:`multiworker_compatible`
on it before ``fit``: it changes that model instance only (not its class, not
what is saved), and does nothing under other strategies.
"""

import types

import tensorflow as tf

__all__ = ["multiworker_compatible", "is_multiworker"]


def is_multiworker(strategy=None):
    """True under a MultiWorkerMirroredStrategy that spans more than one worker."""
    strategy = strategy or tf.distribute.get_strategy()
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and bool(
        strategy.extended._in_multi_worker_mode()
    )


def local_shapes_batch(strategy, iterator):
    """The first batch of a Keras epoch iterator, first local replica only (shapes for a symbolic build)."""

    def local(v):
        if isinstance(v, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(v)[0]
        return v

    for _, _, it in iterator:
        return tf.nest.map_structure(local, next(it))
    return None


def reducible_logs(logs):
    """Step outputs that Keras can reduce across workers: scalars become shape ``[1]``.

    The values are metric results, already aggregated across replicas, so the
    mean over the extra axis gives back the same number.
    """
    if not is_multiworker():
        return logs
    return {
        k: tf.reshape(v, [1]) if tf.is_tensor(v) and v.shape.rank == 0 else v
        for k, v in logs.items()
    }


def symbolic_build(model, parent_method, iterator=None, data_batch=None):
    """``Model._maybe_symbolic_build`` without the cross-replica reduce of a data batch."""
    strategy = getattr(model, "_distribute_strategy", None)
    if iterator is not None and data_batch is None and strategy is not None:
        return parent_method(data_batch=local_shapes_batch(strategy, iterator))
    return parent_method(iterator=iterator, data_batch=data_batch)


def multiworker_compatible(model):
    """Lets a plain Keras model ``fit``/``evaluate`` under MultiWorkerMirroredStrategy.

    Patches this instance's ``train_step``, ``test_step`` and symbolic build (see
    the module docstring for the Keras bugs); returns the model. Safe to call
    under any strategy and more than once.

    Example:

    ```python
    with strategy.scope():
        teacher = kdkeras.multiworker_compatible(kdkeras.build_teacher())
        teacher.compile(...)
    teacher.fit(train_ds)
    ```
    """
    if getattr(model, "_kdkeras_multiworker", False):
        return model
    train_step, test_step = model.train_step, model.test_step
    parent_build = model._maybe_symbolic_build

    def patched_train_step(self, data):
        return reducible_logs(train_step(data))

    def patched_test_step(self, data):
        return reducible_logs(test_step(data))

    def patched_build(self, iterator=None, data_batch=None):
        return symbolic_build(self, parent_build, iterator=iterator, data_batch=data_batch)

    model.train_step = types.MethodType(patched_train_step, model)
    model.test_step = types.MethodType(patched_test_step, model)
    model._maybe_symbolic_build = types.MethodType(patched_build, model)
    model._kdkeras_multiworker = True
    return model


def global_batch_size(local_batch_size):
    """The number of examples in this step across all replicas (a float tensor).

    Losses are summed over the local examples and divided by this number, so
    that the optimizer's cross-replica SUM of gradients equals the gradient of
    the mean over the global batch, as on one device.
    """
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return local_batch_size
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, local_batch_size)
