"""scripts/select_recipe.py: settings and student budgets are ranked on validation data only."""

import numpy as np
import pytest

from conftest import load_script


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


def test_selection_runs_on_the_validation_split_and_never_loads_the_test_split(monkeypatch):
    import kdkeras

    module = _module()
    (x, y), (x_test, y_test) = kdkeras.load_mnist_arrays("sample")
    seen = []
    real_accuracy = kdkeras.evaluation.accuracy

    def spy(model, xs, ys, **kwargs):
        seen.append(len(xs))
        assert not any(np.array_equal(xs[0], t) for t in x_test[:200])
        return real_accuracy(model, xs, ys, **kwargs)

    monkeypatch.setattr(kdkeras.evaluation, "accuracy", spy)
    args = module.parse_args(["--data", "sample", "--val-size", "0.25", "--teacher-steps", "20",
                              "--student-steps", "10", "30", "--temperatures", "4", "--alphas", "0"])
    record = module.run(args, log=lambda message: None)
    row = record["seeds"][0]
    assert row["epochs"] == {"teacher": 1, "10": 1, "30": 1}  # 3,000 digits: 47 steps an epoch
    assert sorted(row["scratch"]) == ["10", "30"]
    assert [(d["student_steps"], d["temperature"], d["alpha"]) for d in row["distilled"]] == [(10, 4.0, 0.0),
                                                                                            (30, 4.0, 0.0)]
    assert set(seen) == {1000}  # a quarter of the 4,000 training digits: teacher, 2 scratch, 2 distilled
    assert len(seen) == 5
    assert record["chosen"] == record["ranking"][0]
    assert "| 30 | 4 | 0 |" in module.markdown(record) and "| 10 | 4 | 0 |" in module.markdown(record)
