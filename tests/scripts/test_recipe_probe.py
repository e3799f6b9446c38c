"""scripts/recipe_probe.py: its logit-standardized KD loss and a one-epoch run with a teacher ensemble."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from helpers.shared import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def probe():
    return load_script("scripts/recipe_probe.py")


def _numpy_standardized_kl(zt, zs, tau):
    def z(v):
        return (v - v.mean(-1, keepdims=True)) / v.std(-1, keepdims=True)

    def log_softmax(v):
        v = v - v.max(-1, keepdims=True)
        return v - np.log(np.exp(v).sum(-1, keepdims=True))

    lt, ls = log_softmax(z(zt) / tau), log_softmax(z(zs) / tau)
    return tau ** 2 * (np.exp(lt) * (lt - ls)).sum(-1)


def test_standardized_kl_matches_numpy_and_ignores_logit_scale(probe):
    rng = np.random.default_rng(0)
    zt = rng.normal(0, 5, (16, 10)).astype("float32")
    zs = rng.normal(0, 2, (16, 10)).astype("float32")
    loss = probe.standardized_kl(2.0)
    got = np.asarray(loss(zt, zs, 99.0))  # the Distiller's temperature is ignored
    np.testing.assert_allclose(got, _numpy_standardized_kl(zt.astype("float64"), zs.astype("float64"), 2.0),
                               rtol=1e-4, atol=1e-6)
    assert got.min() > 1e-3
    # A positive scale and a shift of either side's logits change nothing ...
    np.testing.assert_allclose(np.asarray(loss(3.0 * zt + 7.0, 0.5 * zs - 2.0, 1.0)), got, rtol=1e-3, atol=1e-5)
    # ... so a student whose logits are a scaled, shifted copy of the teacher's has zero loss.
    assert np.abs(np.asarray(loss(zt, 0.25 * zt + 1.0, 1.0))).max() < 1e-5


@pytest.mark.slow
def test_probe_runs_with_a_teacher_ensemble(tmp_path):
    import keras

    import kdkeras

    paths, logits = [], []
    (_, _), (x_test, y_test) = kdkeras.load_mnist_arrays("sample")
    for seed in (0, 1):  # two untrained teachers: different logits, so the ensemble differs from each
        teacher = kdkeras.build_teacher(seed=seed)
        paths.append(str(tmp_path / f"t{seed}.keras"))
        teacher.save(paths[-1])
        logits.append(teacher.predict(x_test, verbose=0))
    ensemble_accuracy = float(np.mean(np.argmax((logits[0] + logits[1]) / 2, -1) == y_test))
    # Distilled from untrained teachers, the student learns little; alone on hard labels, a lot.
    runs = ((["--loss", "kl_standardized", "--temperature", "2", "--alpha", "0.5"], 0.0),
            (["--student", "scratch"], 0.5))
    for k, (extra, minimum) in enumerate(runs):
        saved = str(tmp_path / f"student{k}.keras")
        proc = subprocess.run(
            [sys.executable, os.path.join(ROOT, "scripts", "recipe_probe.py"), "--teacher", *paths,
             "--epochs", "1", "--seed", "3", "--out", saved, *extra],
            capture_output=True, text=True, timeout=600, cwd=ROOT,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        assert result["teacher_test_accuracy"] == pytest.approx(ensemble_accuracy, abs=1e-9)
        assert minimum <= result["test_accuracy"] <= 1.0
        # The reported accuracy is the saved student's, measured here independently.
        logits = keras.models.load_model(saved).predict(x_test, verbose=0)
        assert result["test_accuracy"] == pytest.approx(float(np.mean(logits.argmax(-1) == y_test)), abs=1e-9)
        assert result["epochs"] == 1 and result["seed"] == 3
    keras.backend.clear_session()
