"""Property tests (hypothesis): every loss is finite and >= 0; the data loader refuses bad files clearly."""

import io
import os
import tempfile
import zipfile

import keras
import numpy as np
import pytest
from helpers.shared import log_softmax_np, softmax_np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import kdkeras
from kdkeras.data import load_mnist_arrays

LOSS_EXAMPLES = 150
CLAMPED = ("kl", "reverse_kl", "dkd")  # their value is clamped at 0 (kdkeras.losses._non_negative)
FUZZ_EXAMPLES = 300

finite_logits = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, width=32)
temperatures = st.floats(min_value=0.05, max_value=100.0)
alphas = st.floats(min_value=0.0, max_value=1.0)


@st.composite
def logit_pairs(draw):
    batch = draw(st.integers(1, 6))
    classes = draw(st.integers(2, 12))
    shape = (batch, classes)
    teacher = draw(hnp.arrays(np.float32, shape, elements=finite_logits))
    student = draw(hnp.arrays(np.float32, shape, elements=finite_logits))
    return teacher, student


def _hard_label_loss(y, student):
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)(y, student).numpy()


class Counter:
    def __init__(self):
        self.n = 0


@pytest.mark.parametrize("name", kdkeras.losses.available())
def test_every_loss_and_the_mixed_objective_are_finite_and_non_negative(name, record_property):
    loss = kdkeras.losses.get(name)
    tried = Counter()

    @settings(max_examples=LOSS_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(logit_pairs(), temperatures, alphas)
    def check(pair, temperature, alpha):
        tried.n += 1
        teacher, student = pair
        values = loss(teacher, student, temperature).numpy()
        assert values.shape == (len(teacher),) and values.dtype == np.float32
        assert np.all(np.isfinite(values)), values
        assert np.all(values >= 0.0), values
        y = np.argmax(teacher, axis=-1)
        total = alpha * _hard_label_loss(y, student) + (1 - alpha) * values
        assert np.all(np.isfinite(total)) and np.all(total >= 0.0)

    check()
    record_property("kdkeras_kind", "property")
    clamped = " (after the clamp at 0 for kl, reverse_kl, dkd)" if name in CLAMPED else ""
    record_property("kdkeras_what", f"loss {name!r}: finite and >= 0{clamped} for logits in [-1e4, 1e4], "
                                    "T in [0.05, 100], alpha in [0, 1]")
    record_property("kdkeras_cases", tried.n)
    assert tried.n == LOSS_EXAMPLES


@pytest.mark.parametrize("name", CLAMPED)
def test_the_clamp_only_hides_rounding(name, monkeypatch, record_property):
    """Without the clamp at 0 the divergences are >= 0 up to float32 rounding of their terms."""
    calls = []
    monkeypatch.setattr(kdkeras.losses, "_non_negative", lambda d: calls.append(1) or d)
    loss = kdkeras.losses.get(name)

    @settings(max_examples=LOSS_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(logit_pairs(), temperatures)
    def check(pair, temperature):
        teacher, student = pair
        raw = loss(teacher, student, temperature).numpy()
        lt = log_softmax_np(teacher.astype(np.float64), temperature)
        ls = log_softmax_np(student.astype(np.float64), temperature)
        # Rounding is relative to the size of what is computed, not to the (possibly tiny) result: the
        # summed terms, and the scaled logits z / T inside each float32 log-softmax (an ulp at 4,000 is 5e-4).
        largest = (np.abs(teacher).max(-1) + np.abs(student).max(-1)) / temperature
        scale = temperature**2 * (1.0 + largest + (np.exp(lt) * (np.abs(lt) + np.abs(ls))
                                                   + np.exp(ls) * (np.abs(lt) + np.abs(ls))).sum(-1))
        assert np.all(raw >= -1e-6 * scale), (raw, scale)

    check()
    assert calls, "the unclamped loss was not the one tested"
    record_property("kdkeras_kind", "property")
    record_property("kdkeras_what", f"loss {name!r} before its clamp at 0: >= -1e-6 x the size of its float32 "
                                    "terms for logits in [-1e4, 1e4], T in [0.05, 100]")
    record_property("kdkeras_cases", LOSS_EXAMPLES)


def test_the_clamp_keeps_the_gradient_of_the_raw_value():
    import tensorflow as tf

    x = tf.Variable([1.0, 7.0, 2.5])
    with tf.GradientTape(persistent=True) as tape:
        raw = 3.0 * x - 5.0 * tf.ones(3)             # -2, 16, 2.5: one negative value
        clamped = kdkeras.losses._non_negative(raw)
    np.testing.assert_array_equal(clamped.numpy(), [0.0, 16.0, 2.5])
    np.testing.assert_array_equal(tape.gradient(clamped, x).numpy(), [3.0, 3.0, 3.0])
    # At the match the KL is 0 (possibly -1e-7 before the clamp) and its gradient T (p_s - p_t) is 0;
    # next to it the gradient is still T (p_s - p_t), not cut to 0 where the value is clamped.
    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(4, 10)).astype(np.float32)
    for temperature in (1.0, 4.0):
        student = tf.Variable(teacher + 1e-4 * rng.normal(size=(4, 10)).astype(np.float32))
        with tf.GradientTape() as tape:
            value = tf.reduce_sum(kdkeras.losses.kl_divergence(teacher, student, temperature))
        grad = tape.gradient(value, student).numpy()
        expected = temperature * (softmax_np(student.numpy(), temperature) - softmax_np(teacher, temperature))
        np.testing.assert_allclose(grad, expected, atol=2e-6)
        assert np.abs(grad).max() > 1e-6


@pytest.mark.parametrize("name", kdkeras.losses.available())
@settings(max_examples=60, deadline=None)
@given(st.data())
def test_loss_is_minimal_when_the_student_matches_the_teacher(name, data):
    """KL, reverse KL, soft CE: invariant to a constant shift of the student's logits; MSE: zero at equality."""
    teacher, _ = data.draw(logit_pairs())
    teacher = np.clip(teacher, -50, 50)  # where float32 softmax can still tell classes apart
    temperature = data.draw(st.floats(0.5, 20.0))
    shift = 0.0 if name == "mse" else data.draw(st.floats(-100, 100))
    loss = kdkeras.losses.get(name)
    at_match = loss(teacher, teacher + np.float32(shift), temperature).numpy()
    if name == "soft_ce":
        # Cross-entropy at the match is T^2 * H(p_t), its minimum over student logits.
        expected = -temperature**2 * (softmax_np(teacher, temperature) * log_softmax_np(teacher, temperature)).sum(-1)
        np.testing.assert_allclose(at_match, expected, rtol=1e-3, atol=1e-3 * temperature**2)
    else:
        np.testing.assert_allclose(at_match, 0.0, atol=2e-4 * max(1.0, temperature**2))
    other = teacher[:, ::-1].copy()
    assume(not np.allclose(softmax_np(other, temperature), softmax_np(teacher, temperature), atol=1e-3))
    assert np.all(loss(teacher, other, temperature).numpy() >= at_match - 1e-3 * temperature**2)


# --------------------------------------------------------------------------- #
# Fuzzing the npz loader
# --------------------------------------------------------------------------- #
KEYS = ["x_train", "y_train", "x_test", "y_test", "x", "y", "images", "labels"]
DTYPES = [np.uint8, np.int64, np.float32, np.float64, np.bool_, np.complex64, np.int8, "U3", "S2"]


@st.composite
def npz_contents(draw):
    keys = draw(st.lists(st.sampled_from(KEYS), min_size=0, max_size=5, unique=True))
    arrays = {}
    for key in keys:
        dtype = np.dtype(draw(st.sampled_from(DTYPES)))
        ndim = draw(st.integers(0, 4))
        shape = []
        for _ in range(ndim):
            shape.append(draw(st.sampled_from([0, 1, 2, 3, 28])))
        if key.startswith("x") and draw(st.booleans()):
            shape = [draw(st.integers(0, 4)), 28, 28] + ([1] if draw(st.booleans()) else [])
        if key.startswith("y") and draw(st.booleans()):
            shape = [draw(st.integers(0, 4))]
        if dtype.kind in "US":
            arr = np.full(shape, "ab", dtype=dtype)
        else:
            arr = draw(hnp.arrays(dtype, tuple(shape)))
        arrays[key] = arr
    return arrays


MUTATIONS = ["none", "drop key", "float pixels", "float pixels x255", "negative pixel", "pixel 300",
             "nan pixel", "label 10", "label -1", "float label", "labels 2-D", "short labels", "image 27x28",
             "extra key", "bool labels"]


@st.composite
def mutated_valid_npz(draw):
    """A valid Keras-layout file with at most one thing changed: exercises both outcomes."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    n_train, n_test = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, n_train),
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, n_test),
    }
    mutation = draw(st.sampled_from(MUTATIONS))
    key = draw(st.sampled_from(["x_train", "x_test"]))
    label_key = key.replace("x", "y")
    if mutation == "drop key":
        del arrays[draw(st.sampled_from(sorted(arrays)))]
    elif mutation == "float pixels":
        arrays[key] = arrays[key].astype(np.float32) / 255.0
    elif mutation == "float pixels x255":
        arrays[key] = arrays[key].astype(np.float64)
    elif mutation == "negative pixel":
        arrays[key] = arrays[key].astype(np.int16)
        arrays[key][0, 0, 0] = -1
    elif mutation == "pixel 300":
        arrays[key] = arrays[key].astype(np.int16)
        arrays[key][0, 0, 0] = 300
    elif mutation == "nan pixel":
        arrays[key] = arrays[key].astype(np.float32)
        arrays[key][0, 0, 0] = np.nan
    elif mutation == "label 10":
        arrays[label_key][0] = 10
    elif mutation == "label -1":
        arrays[label_key][0] = -1
    elif mutation == "float label":
        arrays[label_key] = arrays[label_key] + 0.5
    elif mutation == "labels 2-D":
        arrays[label_key] = arrays[label_key][:, None].repeat(2, 1)
    elif mutation == "short labels":
        arrays[label_key] = arrays[label_key][:-1]
    elif mutation == "image 27x28":
        arrays[key] = arrays[key][:, 1:, :]
    elif mutation == "extra key":
        arrays["notes"] = np.zeros(3)
    elif mutation == "bool labels":
        arrays[label_key] = arrays[label_key] > 4
    return arrays


def _write_npz(arrays):
    fd, path = tempfile.mkstemp(suffix=".npz")
    os.close(fd)
    np.savez(path, **arrays)
    return path


def _check_loaded(result):
    for x, y in result:
        assert x.dtype == np.float32 and x.ndim == 4 and x.shape[1:] == (28, 28, 1) and len(x) > 0
        assert np.all(np.isfinite(x)) and x.min() >= 0.0 and x.max() <= 1.0
        assert y.dtype == np.int32 and y.shape == (len(x),)
        assert y.min() >= 0 and y.max() < 10


def test_fuzzed_npz_files_load_correctly_or_are_refused_clearly(record_property):
    """Random files, and valid files with one thing changed: a valid result or a ValueError naming the file."""
    outcomes = {"loaded": 0, "refused": 0}

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.one_of(npz_contents(), mutated_valid_npz()))
    def check(arrays):
        path = _write_npz(arrays)
        try:
            result = load_mnist_arrays(path)
        except ValueError as e:
            outcomes["refused"] += 1
            assert path in str(e) or os.path.basename(path) in str(e), str(e)
        else:
            outcomes["loaded"] += 1
            _check_loaded(result)
        finally:
            os.remove(path)

    check()
    tried = sum(outcomes.values())
    record_property("kdkeras_kind", "bad input refused")
    record_property("kdkeras_what", "fuzzed .npz files (random keys, dtypes, shapes, values; valid files "
                                    "with one key, dtype, shape or value changed)")
    record_property("kdkeras_cases", tried)
    record_property("kdkeras_refused", outcomes["refused"])
    record_property("kdkeras_loaded", outcomes["loaded"])
    assert tried == FUZZ_EXAMPLES and outcomes["refused"] > 0 and outcomes["loaded"] > 0


def test_fuzzed_bytes_and_truncated_archives_are_refused(record_property, tmp_path):
    """Truncated real archives, random bytes, zips without arrays and pickled objects."""
    (x, y), _ = load_mnist_arrays("sample")
    buf = io.BytesIO()
    np.savez(buf, x=(x[:50, ..., 0] * 255).astype(np.uint8), y=y[:50])
    good = buf.getvalue()
    tried = Counter()

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None)
    @given(st.one_of(
        st.integers(0, len(good) - 1).map(lambda n: good[:n]),
        st.binary(max_size=2000),
        st.tuples(st.integers(0, len(good) - 1), st.binary(min_size=1, max_size=8)).map(
            lambda t: good[: t[0]] + t[1] + good[t[0] + len(t[1]):]),
    ))
    def check(blob):
        tried.n += 1
        path = tmp_path / "fuzz.npz"
        path.write_bytes(blob)
        try:
            result = load_mnist_arrays(str(path))
        except ValueError as e:
            assert "fuzz.npz" in str(e)
        else:
            _check_loaded(result)  # a flipped byte inside pixel data can leave a valid file

    check()
    object_path = tmp_path / "objects.npz"
    np.savez(object_path, x=np.array([{"a": 1}], dtype=object), y=np.array([1]))
    with pytest.raises(ValueError, match="allow_pickle=False"):
        load_mnist_arrays(str(object_path))
    empty_zip = tmp_path / "empty.npz"
    with zipfile.ZipFile(empty_zip, "w"):
        pass
    with pytest.raises(ValueError, match="empty.npz"):
        load_mnist_arrays(str(empty_zip))
    record_property("kdkeras_kind", "bad input refused")
    record_property("kdkeras_what", "truncated, byte-flipped and random-bytes .npz files; object arrays; empty zip")
    record_property("kdkeras_cases", tried.n + 2)
