import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MPLBACKEND", "Agg")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import kdkeras  # noqa: E402
from hypothesis import settings  # noqa: E402

# Property tests draw the same cases on every run (repeatable CI); explore new ones with
# `python -m pytest --hypothesis-profile=explore tests/test_properties.py`.
settings.register_profile("repeatable", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile("repeatable")

LOGITS_LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.fixture(autouse=True)
def _float32_policy_and_seed():
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(1234)
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture(scope="session")
def sample_arrays():
    return kdkeras.load_mnist_arrays("sample")


@pytest.fixture(scope="session")
def trained_teacher(sample_arrays):
    """The article teacher, trained for 2 epochs on the bundled 4,000-digit split."""
    keras.utils.set_random_seed(0)
    (x, y), _ = sample_arrays
    teacher = kdkeras.build_teacher(seed=0)
    teacher.compile(optimizer="adam", loss=LOGITS_LOSS, metrics=["accuracy"])
    teacher.fit(kdkeras.make_dataset(x, y, 64, shuffle=True, seed=0), epochs=2, verbose=0)
    return teacher


def make_distiller(teacher, seed=0, **compile_kwargs):
    """A Distiller of a fresh article student, compiled like the keras.io example."""
    student = kdkeras.build_student(seed=seed)
    distiller = kdkeras.Distiller(student=student, teacher=teacher)
    kwargs = dict(
        optimizer=keras.optimizers.Adam(),
        metrics=[keras.metrics.SparseCategoricalAccuracy()],
        student_loss_fn=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        distillation_loss_fn="kl",
        alpha=0.1,
        temperature=3.0,
    )
    kwargs.update(compile_kwargs)
    distiller.compile(**kwargs)
    return distiller


@pytest.fixture
def small_batch(sample_arrays):
    (x, y), _ = sample_arrays
    return x[:96], y[:96]


def softmax_np(z, t=1.0):
    z = np.asarray(z, np.float64) / t
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax_np(z, t=1.0):
    z = np.asarray(z, np.float64) / t
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


def run_local_workers(argv_of, env, n=2, timeout=300, cwd=None):
    """Runs ``n`` processes as one MultiWorkerMirroredStrategy cluster on 127.0.0.1.

    ``argv_of(i)`` is worker ``i``'s command line; each gets ``TF_CONFIG`` naming
    free local ports. Bounded in time: a worker still waiting for its peer after
    ``timeout`` seconds is killed. Returns ``[(returncode, stdout, stderr)]``.
    """
    import json
    import socket
    import subprocess

    socks = [socket.socket() for _ in range(n)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        workers = [f"127.0.0.1:{sock.getsockname()[1]}" for sock in socks]
    finally:
        for sock in socks:
            sock.close()
    procs = []
    try:
        for i in range(n):
            tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}
            procs.append(subprocess.Popen(
                argv_of(i), env=dict(env, TF_CONFIG=json.dumps(tf_config)), cwd=cwd,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            ))
        outputs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outputs)]


@pytest.fixture
def reliability(record_property):
    """Records a row of docs/reliability.md from the test itself (see scripts/reliability_report.py).

    ``reliability(kind, what, **numbers)``: kind is "fault survived" or "bad input refused",
    what says what was tried; numbers (e.g. cases=300) go to the table as they were measured.
    """

    def record(kind, what, **numbers):
        record_property("kdkeras_kind", kind)
        record_property("kdkeras_what", what)
        for key, value in numbers.items():
            record_property(f"kdkeras_{key}", value)

    return record
