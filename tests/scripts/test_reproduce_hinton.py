"""scripts/reproduce_hinton.py end to end on the bundled sample with tiny budgets, and its bias-shift choice."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from helpers.shared import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "scripts", "reproduce_hinton.py")


def _module():
    return load_script("scripts/reproduce_hinton.py")


def test_best_shift_is_chosen_on_the_given_logits():
    module = _module()
    y = np.random.default_rng(0).permutation(np.repeat(np.arange(10), 20))
    logits = np.zeros((200, 10))
    logits[np.arange(200), y] = 10.0       # every digit right by a margin of 10 ...
    threes = y == 3
    logits[threes, 3] = 0.0                # ... except the 3s, where a 5 wins by 1.6.
    logits[threes, 5] = 1.6
    assert module.errors(logits, y) == 20
    # The smallest shift on the 0.25 grid that puts every 3 right without costing another digit.
    assert module.best_shift(logits, y, max_shift=9) == 1.75
    assert module.best_shift(logits, y, max_shift=1.5) == 0.0  # nothing on the grid helps
    # Shifts beyond 10 turn every other digit into a 3: the choice must not go there.
    assert module.best_shift(logits, y, max_shift=20) == 1.75


@pytest.mark.slow
def test_reproduce_hinton_runs_end_to_end_on_the_sample(tmp_path):
    out, md = tmp_path / "h.json", tmp_path / "h.md"
    proc = subprocess.run(
        [sys.executable, SCRIPT, "--data", "sample", "--seeds", "0", "1", "--big-units", "32,32",
         "--small-units", "16,16", "--big-epochs", "1", "--cnn-epochs", "1", "--student-epochs", "2",
         "--temperatures", "4", "20", "--jitters", "0", "2", "--val-size", "0.2", "--out", str(out),
         "--md", str(md)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", MPLBACKEND="Agg"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(out.read_text())
    assert {"command", "date", "machine", "data", "tensorflow"} <= set(record["provenance"])
    assert "800 validation" in record["provenance"]["data"] and record["test_digits"] == 1000
    # The selection tried every (T, jitter) on the first seed's validation split and took the fewest errors.
    selection = record["selection"]
    assert selection["seed"] == 0 and len(selection["tried"]) == 4
    best = min(t["val_errors"] for t in selection["tried"])
    assert any(t["val_errors"] == best and t["temperature"] == selection["temperature"]
               and t["jitter"] == selection["jitter"] for t in selection["tried"])
    for seed in record["seeds"]:
        rows = seed["rows"]
        for key in ("big teacher", "cnn teacher", "small scratch", *seed["keys"].values()):
            assert 0 <= rows[key]["test_errors"] <= 1000 and 0 <= rows[key]["val_errors"] <= 800, key
            assert seed["minutes"][key] > 0
        omitted = rows[seed["keys"]["omitted"]]
        # The omitted-3 student never saw a 3; the shift is on the grid and never adds errors on validation.
        assert omitted["training_3s"] == 0 and omitted["test_3s"] == 100
        assert omitted["shift"] % 0.25 == 0 and 0 <= omitted["shift"] <= 20
        assert omitted["after"]["errors_on_3s"] <= omitted["before"]["errors_on_3s"]
        assert omitted["before"]["errors_on_3s"] <= omitted["before"]["test_errors"]
    summary = record["summary"]
    scratch = summary["test_errors"]["small scratch"]
    assert scratch["per_seed"] == [s["rows"]["small scratch"]["test_errors"] for s in record["seeds"]]
    assert abs(scratch["mean"] - np.mean(scratch["per_seed"])) < 1e-9
    assert abs(scratch["sd"] - np.std(scratch["per_seed"], ddof=1)) < 1e-9
    text = md.read_text()
    assert "| small MLP 784-800-800-10, hard labels | 146 |" in text and "Omitted 3s" in text
    assert f"{scratch['mean']:.1f} ± {scratch['sd']:.1f}" in text


def test_budget_comparison_sets_the_first_seeds_validation_errors_side_by_side():
    module = _module()

    def record(epochs, seed_rows):
        return {"settings": {"student_epochs": epochs}, "selection": {"tried": [], "epochs": epochs},
                "seeds": [{"seed": seed, "rows": {k: {"val_errors": v, "test_errors": 999} for k, v in rows.items()}}
                          for seed, rows in seed_rows]}

    earlier = record(15, [(1, {"small scratch": 150}),  # another seed first: it must be matched by seed number
                          (0, {"big teacher": 144, "small scratch": 149, "distilled": 82})])
    longer = record(30, [(0, {"big teacher": 144, "small scratch": 161, "distilled": 73, "only here": 5})])
    b = module.budget_comparison(longer, earlier, "old.json")
    assert (b["seed"], b["earlier_student_epochs"], b["student_epochs"]) == (0, 15, 30)
    assert b["earlier_selection"]["epochs"] == 15  # the earlier grid is kept with it
    # The small nets present in both; teachers are not small nets.
    assert b["val_errors"] == {"small scratch": {"earlier": 149, "this": 161}, "distilled": {"earlier": 82, "this": 73}}
    lines = "\n".join(module._budget_lines(b))
    assert "| small scratch | 149 | 161 |" in lines and "| distilled | 82 | 73 |" in lines
