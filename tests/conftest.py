import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MPLBACKEND", "Agg")

import keras  # noqa: E402
import pytest  # noqa: E402

import kdkeras  # noqa: E402
from helpers.shared import LOGITS_LOSS, NetworkBlocked, shuffled  # noqa: E402
from hypothesis import settings  # noqa: E402

# Property tests draw the same cases on every run (repeatable CI); explore new ones with
# `python -m pytest --hypothesis-profile=explore tests/test_properties.py`.
settings.register_profile("repeatable", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile("repeatable")



@pytest.fixture(autouse=True)
def _float32_policy_and_seed():
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(1234)
    yield
    keras.config.set_dtype_policy("float32")


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


@pytest.fixture
def small_batch(sample_arrays):
    """96 training digits, every class among them, in shuffled order."""
    (x, y), _ = sample_arrays
    x, y = x[:96], y[:96]
    assert set(y.tolist()) == set(range(10)) and sorted(y.tolist()) != y.tolist()
    return x, y


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
