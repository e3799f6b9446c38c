"""tf.distribute: one step on N replicas updates the weights as one device does."""

import json
import os
import subprocess
import sys

import pytest
from helpers.shared import run_local_workers

HELPER = os.path.join(os.path.dirname(__file__), "helpers", "mirrored_step.py")


@pytest.fixture(scope="module")
def gaps():
    proc = subprocess.run([sys.executable, HELPER], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_two_replica_mirrored_step_matches_one_device(gaps):
    assert gaps["kdkeras"]["max_weight_gap"] < 1e-5, gaps
    assert gaps["kdkeras"]["loss_gap"] < 1e-5, gaps


def test_naive_per_replica_mean_would_not_match(gaps):
    # the same check fails for the naive scaling, so the test above can fail
    assert gaps["naive"]["single_device_gap"] < 1e-6  # identical on one device ...
    assert gaps["naive"]["max_weight_gap"] > 1e-3, gaps  # ... but 2x the gradient on two replicas


# --------------------------------------------------------------------------- #
# MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1 through TF_CONFIG
# --------------------------------------------------------------------------- #
MULTIWORKER = os.path.join(os.path.dirname(__file__), "helpers", "multiworker.py")


def _runs(tmp, kind="distiller"):
    """The single-process reference and two workers, each saving its weights to an .npz."""
    import numpy as np

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_CONFIG", None)
    single = subprocess.run([sys.executable, MULTIWORKER, str(tmp / "single.npz"), kind], env=env,
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    results = run_local_workers(lambda i: [sys.executable, MULTIWORKER, str(tmp / f"worker{i}.npz"), kind], env)
    if kind == "unpatched":
        return results
    for returncode, _, err in results:
        assert returncode == 0, err[-3000:]
    return {name: dict(np.load(tmp / f"{name}.npz")) for name in ("single", "worker0", "worker1")}


@pytest.fixture(scope="module")
def multiworker_runs(tmp_path_factory):
    return _runs(tmp_path_factory.mktemp("multiworker"))


@pytest.mark.slow
def test_multiworker_compatible_lets_a_plain_model_fit_on_two_workers(tmp_path):
    """Without kdkeras.multiworker_compatible a plain Keras model cannot fit on two workers; with it, it
    ends with the single process' weights."""
    import numpy as np

    unpatched = _runs(tmp_path, "unpatched")
    assert all(returncode != 0 for returncode, _, _ in unpatched)
    assert any("PerReplica" in err or "reduce" in err for _, _, err in unpatched), unpatched[0][2][-2000:]
    runs = _runs(tmp_path, "plain")
    ref = runs["single"]
    weight_keys = sorted(k for k in ref if k.startswith("w"))
    for name in ("worker0", "worker1"):
        assert int(runs[name]["replicas"]) == 2
        for k in weight_keys:
            np.testing.assert_allclose(runs[name][k], ref[k], atol=1e-5, err_msg=f"{name} {k}")
    assert max(float(np.abs(ref[k] - ref["init" + k[1:]]).max()) for k in weight_keys) > 1e-2


def test_multiworker_compatible_changes_nothing_else(sample_arrays, tmp_path):
    """Under the default strategy the patched model trains exactly like its twin; it is idempotent, and
    what is saved is the plain model."""
    import keras
    import numpy as np

    import kdkeras

    (x, y), _ = sample_arrays
    x, y = x[:256], y[:256]
    models = []
    for patch in (False, True):
        keras.utils.set_random_seed(0)
        model = kdkeras.build_student(seed=2)
        if patch:
            assert kdkeras.multiworker_compatible(model) is model
            step = model.train_step
            assert kdkeras.multiworker_compatible(model).train_step is step  # not wrapped twice
        model.compile(optimizer=keras.optimizers.SGD(0.1),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
        models.append(model)
    for a, b in zip(*(m.get_weights() for m in models)):
        np.testing.assert_array_equal(a, b)
    models[1].save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert type(loaded) is type(models[0]) and not getattr(loaded, "_kdkeras_multiworker", False)


def test_two_workers_end_with_single_process_weights(multiworker_runs):
    import numpy as np

    ref = multiworker_runs["single"]
    assert int(ref["replicas"]) == 1
    weight_keys = sorted(k for k in ref if k.startswith("w"))
    assert len(weight_keys) == 6  # conv kernel/bias, dense kernel/bias, logits kernel/bias
    for name in ("worker0", "worker1"):
        run = multiworker_runs[name]
        assert int(run["replicas"]) == 2
        for k in weight_keys:
            np.testing.assert_allclose(run[k], ref[k], atol=1e-5, err_msg=f"{name} {k}")
        np.testing.assert_allclose(run["loss"], ref["loss"], rtol=1e-5)
    # ... and training moved the weights far more than the tolerance: the test can fail.
    moved = max(float(np.abs(ref[k] - ref["init" + k[1:]]).max()) for k in weight_keys)
    assert moved > 1e-2, moved
