"""scripts/select_classifier_teacher.py: the rate whose worst seed is best wins; --summarize reads stopped runs."""

import json

import pytest

from helpers.shared import load_script


def _runs(rows):
    return [{"teacher_learning_rate": lr, "seed": s, "accuracy": a} for lr, s, a in rows]


def test_the_rate_with_the_best_worst_seed_wins_even_against_a_better_mean():
    script = load_script("scripts/select_classifier_teacher.py")
    record = {"near_chance_below": 0.05,
              "runs": _runs([(1e-3, 0, 0.50), (1e-3, 1, 0.02), (5e-4, 0, 0.30), (5e-4, 1, 0.31)])}
    script.summarize(record)
    assert record["chosen"] == 5e-4
    assert record["summary"]["0.001"] == {"worst": 0.02, "mean": pytest.approx(0.26), "seeds": 2, "near_chance": 1}
    tie = {"near_chance_below": 0.05, "runs": _runs([(1e-3, 0, 0.30), (1e-3, 1, 0.40), (5e-4, 0, 0.30),
                                                     (5e-4, 1, 0.31)])}
    assert script.summarize(tie)["chosen"] == 1e-3  # equal worst seeds: the better mean


@pytest.mark.slow
def test_teachers_are_trained_per_rate_and_seed_on_the_sample(tmp_path):
    script = load_script("scripts/select_classifier_teacher.py")
    out = tmp_path / "sel.json"
    assert script.main(["--seeds", "0", "1", "--learning-rates", "5e-4", "--teacher-epochs", "1",
                        "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert [(r["teacher_learning_rate"], r["seed"]) for r in record["runs"]] == [(5e-4, 0), (5e-4, 1)]
    assert record["split"] == "validation" and record["chosen"] == 5e-4
    assert 0 < record["chance"] < record["near_chance_below"] < 1
