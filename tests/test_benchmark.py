"""scripts/benchmark.py --to-accuracy end to end on the sample, and how it reads time to accuracy."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tta():
    spec = importlib.util.spec_from_file_location("time_to_accuracy",
                                                  os.path.join(ROOT, "scripts", "time_to_accuracy.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_first_reach_counts_epochs_and_cumulative_seconds():
    tta = _tta()
    assert tta.first_reach([0.5, 0.9, 0.95, 0.93], [2.0, 3.0, 4.0, 5.0], 0.92) == (3, 9.0)
    assert tta.first_reach([0.5, 0.9], [2.0, 3.0], 0.9) == (2, 5.0)  # reaching it exactly counts
    assert tta.first_reach([0.5, 0.9], [2.0, 3.0], 0.95) == (None, None)


@pytest.mark.slow
def test_time_to_accuracy_runs_every_trainer_from_the_same_start(tmp_path):
    out, result = tmp_path / "b.md", tmp_path / "b.json"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "benchmark.py"), "--to-accuracy", "0.5", "--data", "sample",
         "--seeds", "0", "--max-epochs", "2", "--teacher-epochs", "1", "--out", str(out), "--json", str(result)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(result.read_text())
    (run,) = record["runs"]
    trainers = run["trainers"]
    assert set(trainers) == {"scratch", "keras.distillation", "keras.io example", "kdkeras online",
                             "kdkeras cached"}
    for name, t in trainers.items():
        assert len(t["accuracy"]) == len(t["epoch_seconds"]) == 2 and all(s > 0 for s in t["epoch_seconds"])
    assert trainers["kdkeras cached"]["setup_seconds"] > 0  # the cache is on its clock
    # The four distillers compute the same objective from the same weights on the same batches.
    first = [trainers[n]["accuracy"][0] for n in ("keras.distillation", "keras.io example", "kdkeras online",
                                                   "kdkeras cached")]
    assert max(first) - min(first) <= 0.01, first
    summary = record["summary"]
    cached = summary["kdkeras cached"]["per_seed"][0]
    t = trainers["kdkeras cached"]
    if cached["epochs_to_target"] is not None:
        k = cached["epochs_to_target"]
        assert t["accuracy"][k - 1] >= 0.5 and all(a < 0.5 for a in t["accuracy"][: k - 1])
        assert cached["seconds_to_target"] == pytest.approx(t["setup_seconds"] + sum(t["epoch_seconds"][:k]))
    text = out.read_text()
    assert text.startswith("# Benchmarks") and "time to 0.5 test accuracy" in text and "| kdkeras cached |" in text
