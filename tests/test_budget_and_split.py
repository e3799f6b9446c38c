"""The training budget rule and the validation split that every setting is chosen on."""

import hashlib

import numpy as np
import pytest

import kdkeras
from kdkeras import experiment
from kdkeras.recipe import Recipe


def _steps(recipe, stage, n):
    return recipe.epochs(stage, n) * recipe.steps_per_epoch(n)


@pytest.mark.parametrize("stage, on_the_sample, on_full_mnist", [("teacher", 100, 7), ("student", 200, 13)])
def test_default_budget_takes_the_same_steps_on_the_sample_and_on_full_mnist(stage, on_the_sample, on_full_mnist):
    recipe = Recipe()
    on_sample, on_full = _steps(recipe, stage, 4000), _steps(recipe, stage, 60000)
    assert recipe.epochs(stage, 4000) == on_the_sample and recipe.epochs(stage, 60000) == on_full_mnist
    # Within one epoch of each other, and each within half an epoch of the budget.
    assert abs(on_full - on_sample) <= recipe.steps_per_epoch(60000)
    budget = getattr(recipe, f"{stage}_steps")
    assert abs(on_full - budget) <= recipe.steps_per_epoch(60000) / 2
    assert abs(on_sample - budget) <= recipe.steps_per_epoch(4000) / 2


def test_explicit_epochs_win_over_the_budget_and_bad_budgets_are_refused():
    recipe = Recipe(teacher_epochs=3, student_steps=10)
    assert recipe.epochs("teacher", 60000) == 3
    assert recipe.epochs("student", 60000) == 1  # at least one epoch
    assert recipe.epochs("student", 640) == 1 and Recipe(student_steps=30).epochs("student", 640) == 3
    for bad in ({"teacher_steps": 0}, {"student_steps": 2.5}, {"student_epochs": 0}, {"teacher_steps": True}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            Recipe(**bad)
    with pytest.raises(ValueError, match="stage"):
        recipe.epochs("distilled", 100)


def test_a_stage_trains_for_the_epochs_its_budget_gives(sample_arrays):
    (x, y), _ = sample_arrays
    x, y = x[:640], y[:640]
    recipe = Recipe(teacher_steps=30, batch_size=64, shift=0.0, rotation=0.0)  # 10 steps per epoch -> 3 epochs
    result = experiment.train_teacher(kdkeras.build_student(seed=0), (x, y), recipe, verbose=0)
    assert len(result.history["loss"]) == 3
    assert result.model.optimizer.iterations.numpy() == 30


def test_the_command_line_budget_flags_reach_the_recipe():
    from kdkeras import cli

    args = cli.build_parser().parse_args(["--teacher-steps", "500", "--student-epochs", "4"])
    recipe = cli.recipe_from_args(args)
    assert recipe.teacher_steps == 500 and recipe.student_epochs == 4 and recipe.teacher_epochs is None
    assert recipe.epochs("teacher", 64000) == 1 and recipe.epochs("student", 64000) == 4


def _row_hashes(x):
    return {hashlib.sha256(np.ascontiguousarray(row).tobytes()).hexdigest() for row in x}


def test_validation_split_is_stratified_seeded_and_disjoint_from_test(sample_arrays):
    (x, y), (x_test, _) = sample_arrays
    (x_tr, y_tr), (x_val, y_val) = kdkeras.validation_split(x, y, size=800, seed=3)
    assert len(x_val) == 800 and len(x_tr) + len(x_val) == len(x)
    # Every class keeps its share (the sample has 400 training digits per class).
    assert np.array_equal(np.bincount(y_val, minlength=10), np.full(10, 80))
    # Train and validation partition the training digits; none of them is a test digit.
    train_h, val_h, test_h = _row_hashes(x_tr), _row_hashes(x_val), _row_hashes(x_test)
    assert not train_h & val_h and not val_h & test_h and not train_h & test_h
    assert train_h | val_h == _row_hashes(x)
    # The same seed gives the same split; another seed another split.
    (_, _), (x_val_again, _) = kdkeras.validation_split(x, y, size=800, seed=3)
    (_, _), (x_val_other, _) = kdkeras.validation_split(x, y, size=800, seed=4)
    assert np.array_equal(x_val, x_val_again)
    assert _row_hashes(x_val_other) != val_h
    # A fraction works the same way as a count.
    (_, _), (x_val_frac, _) = kdkeras.validation_split(x, y, size=0.2, seed=3)
    assert np.array_equal(x_val_frac, x_val)


def test_validation_split_refuses_bad_sizes(sample_arrays):
    (x, y), _ = sample_arrays
    for size in (0, 1.5, -3, len(y)):
        with pytest.raises(ValueError):
            kdkeras.validation_split(x, y, size=size)
    with pytest.raises(ValueError, match="length"):
        kdkeras.validation_split(x[:10], y[:11])


def test_build_mlp_shapes_and_dropout():
    big = kdkeras.build_mlp((1200, 1200), dropout=0.5, input_dropout=0.2, seed=0)
    small = kdkeras.build_mlp((800, 800), seed=0)
    # 784*1200+1200 + 1200*1200+1200 + 1200*10+10 and 784*800+800 + 800*800+800 + 800*10+10.
    assert big.count_params() == 2_395_210 and small.count_params() == 1_276_810
    x = np.random.default_rng(0).random((4, 28, 28, 1)).astype("float32")
    assert np.allclose(big(x, training=False), big(x, training=False))
    assert not np.allclose(big(x, training=True), big(x, training=False))
    assert np.allclose(small(x, training=True), small(x, training=False))
    with pytest.raises(ValueError, match="dropout"):
        kdkeras.build_mlp((8,), dropout=1.0)


@pytest.mark.parametrize("n, most, expected", [(4000, 16, 9), (60000, 16, 14), (3600, 16, 3), (64 * 13, 16, 13),
                                               (64 * 13, 1, 1), (100, 16, 2), (10, 16, 1)])
def test_steps_per_execution_divides_the_epoch(n, most, expected):
    recipe = Recipe(steps_per_execution=most)
    k = recipe.execution_steps(n)
    assert k == expected and recipe.steps_per_epoch(n) % k == 0
    with pytest.raises(ValueError, match="steps_per_execution must be an integer >= 1"):
        Recipe(steps_per_execution=0)


@pytest.mark.parametrize("stage", ["scratch", "distilled"])
def test_several_steps_per_call_make_the_same_updates_and_epochs(stage, sample_arrays, trained_teacher):
    """Steps per call change only how often Python is involved: the weights and the per-epoch logs match."""
    (x, y), _ = sample_arrays
    train = (x[:64 * 6 + 20], y[:64 * 6 + 20])  # 7 steps per epoch: 7 per call, and the last batch partial
    results = {}
    for most in (1, 16):
        recipe = Recipe(student_epochs=2, shift=0.0, rotation=0.0, steps_per_execution=most, seed=4)
        assert recipe.execution_steps(len(train[0])) == (1 if most == 1 else 7)
        student = kdkeras.build_cnn((4,), 16, name="tiny", seed=2)
        if stage == "scratch":
            results[most] = experiment.train_scratch(student, train, recipe, verbose=0)
        else:
            results[most] = experiment.distil(student, trained_teacher, train, recipe, verbose=0)
    for a, b in zip(results[1].model.get_weights(), results[16].model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    if stage == "scratch":  # (the distilled stage returns the bare student, without its optimizer)
        assert results[1].model.optimizer.iterations.numpy() == results[16].model.optimizer.iterations.numpy() == 14
    for key, values in results[1].history.items():
        np.testing.assert_allclose(values, results[16].history[key], rtol=1e-5)
