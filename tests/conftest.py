import os
import tempfile

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


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script(relative_path):
    """A script of the repository (``scripts/x.py``, ``notebooks/build_notebook.py``) imported as a module."""
    import importlib.util

    path = os.path.join(ROOT, relative_path)
    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shuffled(arrays, seed=7):
    """The arrays in one seeded random order (the bundled file is sorted by class)."""
    order = np.random.default_rng(seed).permutation(len(arrays[0]))
    return tuple(a[order] for a in arrays)


@pytest.fixture(scope="session")
def sample_arrays():
    """The bundled 4,000/1,000 split, each part shuffled: every slice of it holds every class."""
    train, test = kdkeras.load_mnist_arrays("sample")
    return shuffled(train), shuffled(test)


@pytest.fixture(scope="session")
def trained_teacher(sample_arrays):
    """The article teacher, trained for 2 epochs on the bundled 4,000-digit split."""
    keras.utils.set_random_seed(0)
    (x, y), _ = sample_arrays
    teacher = kdkeras.build_teacher(seed=0)
    teacher.compile(optimizer="adam", loss=LOGITS_LOSS, metrics=["accuracy"])
    teacher.fit(kdkeras.make_dataset(x, y, 64, shuffle=True, seed=0), epochs=2, verbose=0)
    return teacher


@pytest.fixture(scope="session")
def teacher_file(trained_teacher, tmp_path_factory):
    """``trained_teacher`` saved as a ``.keras`` file, as the commands take it."""
    path = tmp_path_factory.mktemp("teacher") / "teacher.keras"
    trained_teacher.save(path)
    return str(path)


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
    """96 training digits, every class among them, in shuffled order."""
    (x, y), _ = sample_arrays
    x, y = x[:96], y[:96]
    assert set(y.tolist()) == set(range(10)) and sorted(y.tolist()) != y.tolist()
    return x, y


def softmax_np(z, t=1.0):
    z = np.asarray(z, np.float64) / t
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax_np(z, t=1.0):
    z = np.asarray(z, np.float64) / t
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


_PORT_LOCK = os.path.join(tempfile.gettempdir(), "kdkeras-test-ports.lock")


def _free_ports(n):
    """``n`` local ports that no other test run is handing out at the same time.

    A port is free when bound, but another process could take it between our
    release and the worker's bind. Runs serialise on a lock file, and each takes
    ports from a range keyed by its process id, probing each one before use.
    """
    import fcntl
    import socket

    with open(_PORT_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        base = 20000 + (os.getpid() * 7) % 20000
        ports = []
        for port in range(base, base + 2000):
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            ports.append(port)
            if len(ports) == n:
                return ports
    raise RuntimeError("no free local ports")


def run_local_workers(argv_of, env, n=2, timeout=300, cwd=None):
    """Runs ``n`` processes as one MultiWorkerMirroredStrategy cluster on 127.0.0.1.

    ``argv_of(i)`` is worker ``i``'s command line; each gets ``TF_CONFIG`` naming
    free local ports. Bounded in time: a worker still waiting for its peer after
    ``timeout`` seconds is killed. Returns ``[(returncode, stdout, stderr)]``.
    """
    import json
    import subprocess

    workers = [f"127.0.0.1:{port}" for port in _free_ports(n)]
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


class NetworkBlocked(RuntimeError):
    """A test tried to open a connection outside the loopback interface."""


def _is_loopback(address):
    if not isinstance(address, tuple):  # AF_UNIX path, or other local families
        return True
    host = str(address[0])
    return host in ("localhost", "::1") or host.startswith("127.")


@pytest.fixture(autouse=True, scope="session")
def _no_network():
    """Every connection outside 127.0.0.0/8 and ::1 fails loudly: tests never reach the network."""
    import socket

    original_connect, original_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def guard(address):
        if not _is_loopback(address):
            raise NetworkBlocked(f"a test tried to connect to {address!r}; tests must stay offline "
                                 "(use the bundled sample, generated arrays or tfds.testing.mock_data)")

    def connect(self, address):
        guard(address)
        return original_connect(self, address)

    def connect_ex(self, address):
        guard(address)
        return original_connect_ex(self, address)

    socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
    yield
    socket.socket.connect, socket.socket.connect_ex = original_connect, original_connect_ex
