"""`kdkeras tune` and kdkeras.tuning: trials are scored on validation data carved from the training data, the
teacher runs once, every trial starts from the same weights, and the test split meets only the chosen student."""

import itertools
import json

import keras
import numpy as np
import pytest

import kdkeras
from kdkeras import commands

tuning = pytest.importorskip("kdkeras.tuning")


def _marked_npz(sample_arrays, path):
    """The sample as an npz whose test images, and only they, carry a 1.0 in their top-left pixel."""
    (x, y), (x_test, y_test) = sample_arrays
    assert x[:, 0, 0, 0].max() == 0  # MNIST corners are blank: the mark is unambiguous
    x_test = x_test.copy()
    x_test[:, 0, 0, 0] = 1.0
    np.savez(path, x_train=(x[..., 0] * 255).astype(np.uint8), y_train=y,
             x_test=(x_test[..., 0] * 255).astype(np.uint8), y_test=y_test)
    return x_test, y_test


def _marked(array):
    return bool(np.any(np.asarray(array)[..., 0, 0, 0] > 0.5))


def test_command_scores_trials_on_validation_and_tests_the_chosen_student_once(
        teacher_file, trained_teacher, sample_arrays, tmp_path, monkeypatch):
    x_test, y_test = _marked_npz(sample_arrays, tmp_path / "marked.npz")
    seen = {"distil": [], "scored": [], "cached": [], "compared": []}
    real_distil, real_accuracy = tuning.experiment.distil, tuning.evaluation.accuracy
    real_cache, real_compare = tuning.teacher_logit_arrays, kdkeras.evaluation.compare

    def distil(student, teacher, train, recipe, **kwargs):
        seen["distil"].append((train, recipe, kwargs["teacher_logits"]))
        return real_distil(student, teacher, train, recipe, **kwargs)

    def accuracy(model, x=None, y=None, **kwargs):
        if isinstance(model, keras.Model):  # (compare scores logits through it too)
            seen["scored"].append(x)
        return real_accuracy(model, x, y, **kwargs)

    def cache(teacher, arrays, **kwargs):
        seen["cached"].append(arrays[0])
        return real_cache(teacher, arrays, **kwargs)

    def compare(models, data, **kwargs):
        seen["compared"].append(data)
        return real_compare(models, data, **kwargs)

    monkeypatch.setattr(tuning.experiment, "distil", distil)
    monkeypatch.setattr(tuning.evaluation, "accuracy", accuracy)
    monkeypatch.setattr(tuning, "teacher_logit_arrays", cache)
    monkeypatch.setattr(kdkeras.evaluation, "compare", compare)
    out = tmp_path / "out"
    assert commands.main(["tune", "--teacher", teacher_file, "--student", "tiny", "--data", str(tmp_path / "marked.npz"),
                          "--epochs", "2", "--temperatures", "2", "8", "--alphas", "0", "0.5", "--learning-rates",
                          "0.003", "--max-trials", "2", "--out", str(out), "--verbose", "0"]) == 0

    # Two trials with different settings, each trained on the training part only and scored on validation only.
    assert len(seen["distil"]) == 2 and len(seen["scored"]) == 2
    settings = [(r.temperature, r.alpha) for _, r, _ in seen["distil"]]
    assert len(set(settings)) == 2 and all(s in itertools.product((2.0, 8.0), (0.0, 0.5)) for s in settings)
    (x, _), _ = sample_arrays
    for (train_x, _), _, _ in seen["distil"]:
        assert len(train_x) == 3600 and not _marked(train_x)
    for val_x in seen["scored"]:
        assert len(val_x) == 400 and not _marked(val_x)
    # The teacher ran once, on the training part; both trials got those logits.
    assert len(seen["cached"]) == 1 and not _marked(seen["cached"][0])
    train_x = seen["distil"][0][0][0]
    expected = trained_teacher.predict(train_x, verbose=0)
    for _, _, logits in seen["distil"]:
        np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-4)
    # The test split is evaluated once, after the search, on the chosen student.
    assert len(seen["compared"]) == 1 and _marked(seen["compared"][0][0])

    result = json.loads((out / "tuning.json").read_text())
    assert [t["status"] for t in result["trials"]] == ["COMPLETED", "COMPLETED"]
    scores = [t["val_accuracy"] for t in result["trials"]]
    assert scores == sorted(scores, reverse=True) and result["chosen"]["val_accuracy"] == max(scores)
    chosen = (result["chosen"]["temperature"], result["chosen"]["alpha"])
    assert chosen == (result["trials"][0]["temperature"], result["trials"][0]["alpha"])
    # student.keras is the chosen trial's student: its test accuracy, recomputed here, is the reported one.
    student = keras.models.load_model(out / "student.keras")
    test_accuracy = float(np.mean(student.predict(x_test, verbose=0).argmax(-1) == y_test))
    assert result["test"]["student (chosen trial)"]["accuracy"] == pytest.approx(test_accuracy, abs=1e-6)
    assert test_accuracy > 0.3  # far above chance (0.1) after two epochs
    for name in ("report.md", "tuning.png"):
        assert (out / name).stat().st_size > 0


def _hypermodel(trained_teacher, **space):
    recipe = kdkeras.Recipe(student_epochs=1, shift=0.0, rotation=0.0, seed=3)
    student = kdkeras.build_cnn((4,), 16, name="tiny", seed=5)
    return tuning.DistillationHyperModel(student, trained_teacher, recipe, **space), student


def test_every_trial_starts_from_the_students_weights_with_its_own_settings(trained_teacher, sample_arrays):
    hypermodel, student = _hypermodel(trained_teacher, temperatures=(2, 8), alphas=(0.0, 0.5))
    initial = [w.copy() for w in student.get_weights()]
    hp = tuning.kt.HyperParameters()
    first = hypermodel.build(hp)
    (x, y), _ = sample_arrays
    hypermodel.fit(hp, first, (x[:512], y[:512]), (x[512:640], y[512:640]))
    hp.values.update(temperature=8.0, alpha=0.5)
    second = hypermodel.build(hp)
    for a, b, c in zip(initial, second.get_weights(), first.get_weights()):
        np.testing.assert_array_equal(a, b)  # a fresh copy, not the first trial's trained weights
    assert any(not np.array_equal(a, c) for a, c in zip(initial, first.get_weights()))  # the trial trained a copy
    recipe = hypermodel.recipe_for(hp)
    assert (recipe.temperature, recipe.alpha, recipe.seed, recipe.student_epochs) == (8.0, 0.5, 3, 1)


def test_grid_search_runs_every_combination(trained_teacher, sample_arrays, tmp_path):
    hypermodel, _ = _hypermodel(trained_teacher, temperatures=(2, 4), alphas=(0.0,), learning_rates=(1e-3, 3e-3))
    tuner = tuning.DistillationTuner(hypermodel, algorithm="grid", max_trials=None, directory=tmp_path)
    (x, y), _ = sample_arrays
    tuner.search((x[:512], y[:512]), validation_data=(x[512:768], y[512:768]), verbose=0)
    rows = tuning.trial_table(tuner)
    assert sorted((r["temperature"], r["learning_rate"]) for r in rows) == [(2.0, 1e-3), (2.0, 3e-3), (4.0, 1e-3),
                                                                            (4.0, 3e-3)]
    best = tuner.get_best_models(1)[0]
    assert kdkeras.evaluation.accuracy(best, x[512:768], y[512:768]) == pytest.approx(rows[0]["val_accuracy"])


@pytest.mark.parametrize("space, message", [
    (dict(temperatures=()), "temperatures must hold at least one value"),
    (dict(temperatures=(0.0,)), "temperatures:"),
    (dict(alphas=(1.5,)), "alphas:"),
    (dict(losses=("no-such-loss",)), "losses:"),
    (dict(learning_rates=(-1.0,)), "learning_rates:"),
])
def test_a_bad_search_space_is_refused(trained_teacher, space, message):
    with pytest.raises(ValueError, match=message):
        _hypermodel(trained_teacher, **space)


def test_bad_command_arguments_get_one_line_errors(teacher_file, capsys, tmp_path):
    base = ["tune", "--teacher", teacher_file, "--student", "tiny", "--out", str(tmp_path / "o"), "--verbose", "0"]
    assert commands.main([*base, "--temperatures", "0"]) == 2
    assert "temperatures:" in capsys.readouterr().err
    assert commands.main([*base, "--algorithm", "random", "--max-trials", "0"]) == 2
    assert "max_trials must be an integer >= 1" in capsys.readouterr().err
    assert commands.main([*base, "--validation-size", "1.5"]) == 2
    err = capsys.readouterr().err
    assert "--validation-size" in err and len(err.strip().splitlines()) == 1
