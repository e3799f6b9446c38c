"""kdkeras.augment: geometry against a NumPy reference, mixup's maths, repeatability."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import kdkeras
from kdkeras import augment as A
from kdkeras.data import fixed_epoch_order


def numpy_affine(image, shift, angle, zoom):
    """Independent reference: for every output pixel, rotate/zoom/shift back and sample bilinearly."""
    h, w = image.shape
    cy, cx = (h - 1) / 2, (w - 1) / 2
    out = np.zeros_like(image)
    c, s = math.cos(angle), math.sin(angle)
    for yo in range(h):
        for xo in range(w):
            # Undo the shift, then the rotation and zoom about the centre.
            dx, dy = xo - cx - shift[0], yo - cy - shift[1]
            xi = (c * dx + s * dy) / zoom + cx
            yi = (-s * dx + c * dy) / zoom + cy
            x0, y0 = math.floor(xi), math.floor(yi)
            value = 0.0
            for yy, wy in ((y0, 1 - (yi - y0)), (y0 + 1, yi - y0)):
                for xx, wx in ((x0, 1 - (xi - x0)), (x0 + 1, xi - x0)):
                    if 0 <= yy < h and 0 <= xx < w:
                        value += wy * wx * image[yy, xx]
            out[yo, xo] = value
    return out


def transform(images, shift, angle, zoom):
    n, h, w, _ = images.shape
    m = A._affine_matrices(h, w, tf.constant(shift, tf.float32), tf.constant(angle, tf.float32),
                           tf.constant(zoom, tf.float32))
    return A._apply_transforms(tf.constant(images), m).numpy()


def test_affine_matches_numpy_reference():
    rng = np.random.default_rng(0)
    images = rng.random((4, 12, 10, 1)).astype("float32")
    shift = rng.uniform(-2, 2, (4, 2))
    angle = rng.uniform(-0.5, 0.5, 4)
    zoom = rng.uniform(0.8, 1.2, 4)
    got = transform(images, shift, angle, zoom)
    for i in range(4):
        want = numpy_affine(images[i, ..., 0], shift[i], angle[i], zoom[i])
        np.testing.assert_allclose(got[i, ..., 0], want, atol=1e-4)


def test_shift_and_rotation_directions():
    image = np.zeros((1, 7, 7, 1), "float32")
    image[0, 3, 1, 0] = 1.0  # left of the centre
    right = transform(image, [[2.0, 0.0]], [0.0], [1.0])
    assert right[0, 3, 3, 0] == pytest.approx(1.0)  # +dx moves content to the right
    down = transform(image, [[0.0, 2.0]], [0.0], [1.0])
    assert down[0, 5, 1, 0] == pytest.approx(1.0)  # +dy moves content down
    quarter = transform(image, [[0.0, 0.0]], [math.pi / 2], [1.0])
    np.testing.assert_allclose(quarter[0, ..., 0], np.rot90(image[0, ..., 0], k=-1), atol=1e-5)


def test_random_affine_ranges_and_identity():
    x = tf.random.stateless_uniform([16, 28, 28, 1], [1, 2])
    np.testing.assert_array_equal(A.random_affine(x, [3, 4], 0.0, 0.0, 0.0).numpy(), x.numpy())
    y1 = A.random_affine(x, [3, 4], 0.1, 10.0)
    y2 = A.random_affine(x, [3, 4], 0.1, 10.0)
    np.testing.assert_array_equal(y1.numpy(), y2.numpy())  # stateless: same seed, same views
    assert not np.array_equal(y1.numpy(), A.random_affine(x, [3, 5], 0.1, 10.0).numpy())
    # A centred dot moves by at most max_shift * size (+ rotation keeps the centre).
    dot = np.zeros((64, 28, 28, 1), "float32")
    dot[:, 13:15, 13:15, 0] = 1.0
    moved = A.random_affine(dot, [0, 1], 0.1, 10.0).numpy()
    ys, xs = np.nonzero(moved[..., 0].sum(0) > 1e-3)
    assert ys.min() >= 13 - 3 - 1 and ys.max() <= 14 + 3 + 1
    assert xs.min() >= 13 - 3 - 1 and xs.max() <= 14 + 3 + 1
    assert ys.max() - ys.min() >= 4  # and it does move
    for bad in (dict(max_shift=-0.1), dict(max_rotation=200.0), dict(max_zoom=float("nan"))):
        with pytest.raises(ValueError):
            A.random_affine(x, [0, 0], **{"max_shift": 0.1, "max_rotation": 5.0, **bad})
    with pytest.raises(ValueError, match="batch, height, width, channels"):
        A.random_affine(tf.zeros([28, 28]), [0, 0])


def test_mixup_blends_images_and_labels_with_one_lambda():
    rng = np.random.default_rng(1)
    x = rng.random((64, 5, 5, 1)).astype("float32")
    y = np.arange(64) % 10
    xm, ym = (t.numpy() for t in A.mixup(x, y, [7, 8], strength=0.4, num_classes=10))
    np.testing.assert_allclose(ym.sum(-1), 1.0, atol=1e-6)
    checked = 0
    for i in range(64):
        j = 63 - i
        if y[i] == y[j]:
            continue
        lam = ym[i, y[i]]
        assert ym[i, y[j]] == pytest.approx(1 - lam, abs=1e-6)
        np.testing.assert_allclose(xm[i], lam * x[i] + (1 - lam) * x[j], atol=1e-5)
        checked += 1
    assert checked > 50


def test_mixup_lambda_follows_beta():
    n = 20000
    x = np.zeros((n, 1), "float32")
    y = np.zeros(n, "int64")
    y[n // 2:] = 1  # example i and n-1-i have different labels
    a = 0.2
    _, ym = A.mixup(x, y, [0, 9], strength=a, num_classes=2)
    lam = ym.numpy()[: n // 2, 0]
    assert lam.mean() == pytest.approx(0.5, abs=0.01)
    assert lam.var() == pytest.approx(1 / (4 * (2 * a + 1)), abs=0.01)  # Beta(a, a) variance
    with pytest.raises(ValueError, match="strength"):
        A.mixup(x, y, [0, 0], strength=0.0)


def test_augment_depends_on_step_only_so_a_resume_sees_the_same_views():
    (x, y), _ = kdkeras.load_mnist_arrays("sample")
    base = (x[:640], y[:640])
    full, steps = fixed_epoch_order(base, 64, 3, seed=3)
    full = [b for b in A.augment(full, 5, mixup_strength=0.2)]
    again = [b for b in A.augment(fixed_epoch_order(base, 64, 3, seed=3)[0], 5, mixup_strength=0.2)]
    resumed, _ = fixed_epoch_order(base, 64, 3, seed=3, initial_epoch=2)
    resumed = [b for b in A.augment(resumed, 5, mixup_strength=0.2, initial_step=2 * steps)]
    assert len(full) == 3 * steps and len(resumed) == steps
    for a, b in zip(full, again):
        np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
    for a, b in zip(full[2 * steps:], resumed):
        np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
        np.testing.assert_array_equal(a[1].numpy(), b[1].numpy())
    assert full[0][1].shape == (64, 10) and full[0][1].dtype == tf.float32
    # Epochs differ (new views of the same digits), and sample weights pass through.
    assert not np.array_equal(full[0][0].numpy(), full[steps][0].numpy())
    weighted = kdkeras.make_dataset(x[:64], y[:64], 32, sample_weight=np.full(64, 2.0, "float32"))
    xb, yb, wb = next(iter(A.augment(weighted, 0)))
    assert yb.dtype.is_integer and np.all(wb.numpy() == 2.0)


def test_augment_rejects_bad_arguments():
    ds = kdkeras.make_dataset(np.zeros((8, 28, 28, 1), "float32"), np.zeros(8, "int64"), 4)
    with pytest.raises(ValueError, match="mixup_strength"):
        A.augment(ds, 0, mixup_strength=-1.0)
    with pytest.raises(ValueError, match="initial_step"):
        A.augment(ds, 0, initial_step=-1)
    with pytest.raises(ValueError, match="max_shift"):
        A.augment(ds, 0, max_shift=2.0)
    with pytest.raises(ValueError, match="max_shift"):  # checked even when nothing else is on
        A.augment(ds, 0, max_shift=float("nan"), max_rotation=0.0)


def test_online_teacher_sees_the_students_augmented_view():
    """A teacher with the student's weights gives zero distillation loss only on the same view."""
    student = kdkeras.build_student(seed=0)
    teacher = kdkeras.build_student(seed=1, name="twin")
    teacher.set_weights(student.get_weights())
    (x, y), _ = kdkeras.load_mnist_arrays("sample")
    ds = A.augment(kdkeras.make_dataset(x[:256], y[:256], 64), 0, mixup_strength=0.5)
    d = kdkeras.Distiller(student=student, teacher=teacher)
    d.compile(optimizer="adam", student_loss_fn="cce", alpha=0.0, temperature=2.0)
    logs = d.evaluate(ds, return_dict=True, verbose=0)
    assert logs["distillation_loss"] < 1e-6  # (two different views give > 1e-4, below)
    assert logs["student_loss"] > 0.5  # the soft labels are used by the hard-label loss
    # Sanity: different views would not give zero (the twin on un-augmented images).
    xs = next(iter(ds))[0]
    plain = next(iter(kdkeras.make_dataset(x[:256], y[:256], 64)))[0]
    t = keras.ops.softmax(teacher(plain) / 2.0)
    s = keras.ops.log_softmax(student(xs) / 2.0)
    assert float(keras.ops.mean(keras.ops.sum(t * (keras.ops.log(t) - s), -1))) > 1e-4
