"""scripts/select_recipe.py: settings and student budgets are ranked on validation data only."""

import numpy as np
import pytest

from helpers.shared import load_script


def _module():
    return load_script("scripts/select_recipe.py")


def test_each_setting_is_compared_with_the_scratch_student_of_its_own_budget():
    module = _module()
    rows = [{"seed": s, "teacher": 0.99, "scratch": {"100": 0.90 + s * 0.01, "200": 0.96},
             "distilled": [{"student_steps": 100, "temperature": 4.0, "alpha": 0.0, "val_accuracy": 0.93},
                           {"student_steps": 200, "temperature": 4.0, "alpha": 0.0, "val_accuracy": 0.95 + s * 0.02}]}
            for s in (0, 1)]
    record = module.rank(rows, [100, 200])
    # 200 steps distils best in absolute terms (mean 0.96) but only ties its own scratch student ...
    assert record["chosen"]["student_steps"] == 200
    assert record["chosen"]["mean_val_accuracy"] == pytest.approx(0.96)
    assert record["chosen"]["vs_scratch"] == pytest.approx(0.0)
    # ... while 100 steps beats its own (mean 0.905) by 0.025: each row is measured against its own budget.
    assert record["ranking"][1]["vs_scratch"] == pytest.approx(0.93 - 0.905)
    assert record["mean_val_accuracy"]["scratch"] == {"100": pytest.approx(0.905), "200": pytest.approx(0.96)}


@pytest.mark.slow
def test_selection_scores_every_model_on_the_validation_split_and_never_on_the_test_split(monkeypatch):
    import kdkeras

    module = _module()
    (x, y), (x_test, _) = kdkeras.load_mnist_arrays("sample")
    _, (x_val, _) = kdkeras.validation_split(x, y, size=0.2, seed=0)  # the split the script must carve
    test_rows = {row.tobytes() for row in x_test}
    seen = []
    real_accuracy = kdkeras.evaluation.accuracy

    def spy(model, xs, ys, **kwargs):
        seen.append(len(xs))
        assert not any(row.tobytes() in test_rows for row in xs)  # no test digit is ever scored
        np.testing.assert_array_equal(xs, x_val)
        return real_accuracy(model, xs, ys, **kwargs)

    monkeypatch.setattr(kdkeras.evaluation, "accuracy", spy)
    args = module.parse_args(["--data", "sample", "--val-size", "0.2", "--teacher-steps", "20",
                              "--student-steps", "10", "30", "--temperatures", "4", "--alphas", "0"])
    record = module.run(args, log=lambda message: None)
    row = record["seeds"][0]
    assert row["epochs"] == {"teacher": 1, "10": 1, "30": 1}  # 3,200 digits: 50 steps an epoch
    assert sorted(row["scratch"]) == ["10", "30"]
    assert [(d["student_steps"], d["temperature"], d["alpha"]) for d in row["distilled"]] == [(10, 4.0, 0.0),
                                                                                            (30, 4.0, 0.0)]
    assert seen == [800] * 5  # a fifth of the 4,000 training digits: teacher, 2 scratch, 2 distilled
    assert record["chosen"] == record["ranking"][0]
    assert "| 30 | 4 | 0 |" in module.markdown(record) and "| 10 | 4 | 0 |" in module.markdown(record)
