"""MNIST loading: bundled sample, npz files, tfds (mocked) and the offline paths. No network."""

import os
import time
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import kdkeras
from kdkeras.data import mnist as data


def test_bundled_sample_split_is_stratified_and_deterministic():
    (x_train, y_train), (x_test, y_test) = kdkeras.load_mnist_arrays("sample")
    assert x_train.shape == (4000, 28, 28, 1) and x_test.shape == (1000, 28, 28, 1)
    assert x_train.dtype == np.float32 and 0.0 <= x_train.min() and x_train.max() <= 1.0
    assert np.bincount(y_train).tolist() == [400] * 10
    assert np.bincount(y_test).tolist() == [100] * 10
    (x2, y2), _ = kdkeras.load_mnist_arrays("sample")
    np.testing.assert_array_equal(x_train, x2)
    # real digits: the bundled file is the documented one
    raw = np.load(data.sample_path())
    assert raw["x"].shape == (5000, 28, 28) and raw["x"].dtype == np.uint8
    # no image is in both splits
    flat_train = {row.tobytes() for row in (x_train * 255).astype(np.uint8).reshape(4000, -1)}
    assert not any(row.tobytes() in flat_train for row in (x_test * 255).astype(np.uint8).reshape(1000, -1))


def test_load_mnist_datasets_shapes_and_prefetch():
    train, test = kdkeras.load_mnist(source="sample", batch_size=50)
    x, y = next(iter(train))
    assert x.shape == (50, 28, 28, 1) and x.dtype == tf.float32 and y.dtype == tf.int32
    assert int(train.cardinality()) == 80 and int(test.cardinality()) == 20


def test_shuffle_seed_is_repeatable():
    a, _ = kdkeras.load_mnist(source="sample", batch_size=64, seed=7)
    b, _ = kdkeras.load_mnist(source="sample", batch_size=64, seed=7)
    np.testing.assert_array_equal(next(iter(a))[1], next(iter(b))[1])


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def test_keras_mnist_npz_layout(tmp_path):
    rng = np.random.default_rng(0)
    path = write_npz(tmp_path / "mnist.npz",
                     x_train=rng.integers(0, 256, (30, 28, 28), dtype=np.uint8), y_train=rng.integers(0, 10, 30),
                     x_test=rng.integers(0, 256, (10, 28, 28), dtype=np.uint8), y_test=rng.integers(0, 10, 10))
    (x_train, y_train), (x_test, y_test) = kdkeras.load_mnist_arrays(path)
    assert x_train.shape == (30, 28, 28, 1) and x_test.shape == (10, 28, 28, 1)
    assert x_train.max() <= 1.0 and y_train.dtype == np.int32


def test_xy_npz_is_split_80_20(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (100, 28, 28, 1), dtype=np.uint8)
    y = np.repeat(np.arange(10), 10)
    (x_train, _), (x_test, _) = kdkeras.load_mnist_arrays(write_npz(tmp_path / "xy.npz", x=x, y=y))
    assert len(x_train) == 80 and len(x_test) == 20


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="no/such/file.npz"):
        kdkeras.load_mnist_arrays("no/such/file.npz")


def test_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.npz"
    path.write_bytes(b"PK\x03\x04 this is not a zip archive")
    with pytest.raises(ValueError, match="corrupt.npz"):
        kdkeras.load_mnist_arrays(str(path))
    good = write_npz(tmp_path / "good.npz", x=np.zeros((10, 28, 28)), y=np.zeros(10))
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(open(good, "rb").read()[:200])
    with pytest.raises(ValueError, match="truncated.npz"):
        kdkeras.load_mnist_arrays(str(truncated))


def test_wrong_keys(tmp_path):
    path = write_npz(tmp_path / "keys.npz", images=np.zeros((10, 28, 28)), labels=np.zeros(10))
    with pytest.raises(ValueError, match=r"\['images', 'labels'\]"):
        kdkeras.load_mnist_arrays(path)


def test_wrong_image_shape(tmp_path):
    path = write_npz(tmp_path / "shape.npz", x=np.zeros((10, 32, 32)), y=np.zeros(10, int))
    with pytest.raises(ValueError, match=r"\(10, 32, 32\)"):
        kdkeras.load_mnist_arrays(path)


def test_object_arrays_are_refused(tmp_path):
    path = tmp_path / "pickled.npz"
    np.savez(path, x=np.array([np.zeros((28, 28)), "evil"], dtype=object), y=np.zeros(2, int))
    with pytest.raises(ValueError, match="allow_pickle=False"):
        kdkeras.load_mnist_arrays(str(path))


def test_labels_out_of_range_in_file(tmp_path):
    y = np.zeros(10, int)
    y[2] = 11
    path = write_npz(tmp_path / "labels.npz", x=np.zeros((10, 28, 28)), y=y)
    with pytest.raises(ValueError, match=r"\[11\]"):
        kdkeras.load_mnist_arrays(path)


def test_mismatched_lengths(tmp_path):
    path = write_npz(tmp_path / "len.npz", x=np.zeros((10, 28, 28)), y=np.zeros(9, int))
    with pytest.raises(ValueError, match="10 images but 9 labels"):
        kdkeras.load_mnist_arrays(path)


def test_empty_arrays(tmp_path):
    path = write_npz(tmp_path / "empty.npz", x=np.zeros((0, 28, 28)), y=np.zeros(0, int))
    with pytest.raises(ValueError, match="empty"):
        kdkeras.load_mnist_arrays(path)


def test_bad_source_type():
    with pytest.raises(TypeError, match="42"):
        kdkeras.load_mnist_arrays(42)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """tfds has nothing prepared and the download host refuses at once (a closed local port)."""
    monkeypatch.setattr(data, "_DOWNLOAD_PROBE", ("127.0.0.1", 9))
    return str(tmp_path / "tfds")


def test_tfds_offline_fails_fast_with_alternatives(offline):
    start = time.monotonic()
    with pytest.raises(kdkeras.DatasetUnavailableError) as info:
        kdkeras.load_mnist(source="tfds", data_dir=offline)
    # tensorflow-datasets alone retries for minutes; the bound leaves room for a busy 2-core machine.
    assert time.monotonic() - start < 90
    message = str(info.value)
    assert 'source="sample"' in message and "npz" in message


def test_auto_offline_falls_back_to_sample_with_warning(offline):
    start = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        arrays, used = kdkeras.load_mnist_arrays("auto", data_dir=offline, return_source=True)
    assert time.monotonic() - start < 90
    assert used == "sample" and len(arrays[0][0]) == 4000
    assert any("5,000-digit" in str(w.message) for w in caught)


def test_probe_is_bounded_even_when_dns_hangs(monkeypatch):
    def hanging_connection(*args, **kwargs):
        time.sleep(5)
        raise OSError("never")

    monkeypatch.setattr(data.socket, "create_connection", hanging_connection)
    start = time.monotonic()
    assert data._can_reach("example.invalid", 443, timeout=0.5) is False
    assert time.monotonic() - start < 2


def test_tfds_path_with_mock_data(monkeypatch, tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    monkeypatch.setattr(data, "_can_reach", lambda *a, **k: True)
    with tfds.testing.mock_data(num_examples=12):
        arrays, used = kdkeras.load_mnist_arrays("tfds", data_dir=str(tmp_path), return_source=True)
        train, _ = kdkeras.load_mnist(source="tfds", data_dir=str(tmp_path), batch_size=4)
    (x_train, y_train), (x_test, _) = arrays
    assert used == "tfds"
    assert x_train.shape == (12, 28, 28, 1) and x_test.shape == (12, 28, 28, 1)
    assert x_train.dtype == np.float32 and x_train.max() <= 1.0
    assert y_train.min() >= 0 and y_train.max() < 10
    assert next(iter(train))[0].shape == (4, 28, 28, 1)


def test_cache_rejects_bad_arguments(trained_teacher, small_batch):
    x, y = small_batch
    ds = kdkeras.make_dataset(x, y, 32)
    with pytest.raises(ValueError, match="bfloat8"):
        kdkeras.cache_teacher_logits(trained_teacher, ds, dtype="bfloat8")
    with pytest.raises(TypeError, match="ndarray"):
        kdkeras.cache_teacher_logits(trained_teacher, x)
    with pytest.raises(ValueError, match="empty"):
        kdkeras.cache_teacher_logits(trained_teacher, ds.take(0))
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="inference_batch_size"):
            kdkeras.cache_teacher_logits(trained_teacher, (x, y), inference_batch_size=bad)
    with pytest.raises(ValueError, match="applies to arrays"):
        kdkeras.cache_teacher_logits(trained_teacher, ds, inference_batch_size=256)


class CallSizeTeacher(keras.Model):
    """Linear logits plus the number of examples in the call: the cached logits show how the teacher was called."""

    def __init__(self, w, b):
        super().__init__()
        self.w, self.b = tf.constant(w), tf.constant(b)

    def call(self, x, training=False):
        flat = tf.reshape(x, (tf.shape(x)[0], -1))
        size = tf.cast(tf.shape(x)[0], tf.float32)
        return flat @ self.w + self.b + size + (1000.0 if training else 0.0)


def test_cache_calls_the_teacher_in_inference_batches_and_yields_training_batches(small_batch):
    x, y = small_batch  # 96 digits, every class, shuffled
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(784, 10)).astype(np.float32) * 0.05, rng.normal(size=10).astype(np.float32)
    reference = x.reshape(96, -1) @ w + b  # NumPy, no call-size term

    def cached(**kw):
        ds = kdkeras.cache_teacher_logits(CallSizeTeacher(w, b), (x, y), batch_size=16, shuffle=False, **kw)
        batches = list(ds)
        assert [int(b[1].shape[0]) for b in batches] == [16] * 6  # training batches, whatever the call size
        logits = np.concatenate([b[0]["teacher_logits"].numpy() for b in batches])
        np.testing.assert_array_equal(np.concatenate([b[1].numpy() for b in batches]), y)
        return logits - reference  # what is left is the call-size term

    np.testing.assert_allclose(cached(inference_batch_size=40), np.repeat([40.0, 40.0, 16.0], [40, 40, 16])[:, None]
                               * np.ones(10), atol=1e-3)
    np.testing.assert_allclose(cached(), np.full((96, 10), 16.0), atol=1e-3)  # default: the training batch


def test_network_guard_refuses_outside_connections_and_allows_loopback():
    import socket

    from helpers.shared import NetworkBlocked

    with pytest.raises(NetworkBlocked, match="8.8.8.8"):
        socket.create_connection(("8.8.8.8", 53), timeout=1)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=5):
            pass  # loopback stays open: the multi-worker tests need it
    # The offline probe of tensorflow-datasets reports "not reachable" rather than hanging.
    assert data._can_reach("storage.googleapis.com", 443, timeout=1.0) is False


def test_the_imported_package_ships_its_sample_data():
    """The bundled sample is package data: present, intact, inside the package that was imported."""
    import hashlib

    path = data.sample_path()
    assert os.path.isfile(path)
    assert os.path.dirname(os.path.dirname(path)) == os.path.dirname(os.path.abspath(kdkeras.__file__))
    with open(path, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == (
            "f814240cf7e0d3cbaacc1a898905819a40ab46fb317a600d2a4b91a5c184c810")
    if os.environ.get("CI"):  # CI tests the built wheel, installed, not the checkout
        assert "site-packages" in kdkeras.__file__, kdkeras.__file__
