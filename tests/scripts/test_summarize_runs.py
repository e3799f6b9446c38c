"""scripts/summarize_runs.py: the result file behind the README's results table."""

import json

import pytest

from helpers.shared import load_script


def _run_dir(tmp_path, seed, teacher, scratch, distilled, seconds):
    out = tmp_path / f"s{seed}"
    out.mkdir()
    models = {"teacher": {"accuracy": teacher},
              "student (scratch)": {"accuracy": scratch, "agreement": 0.97},
              "student (distilled)": {"accuracy": distilled, "agreement": 0.98}}
    run = {"args": {"seed": seed}, "data": "made in the test", "date": "2026-12-02T00:00:00", "seconds": seconds}
    (out / "metrics.json").write_text(json.dumps({"run": run, "models": models}))
    return str(out)


def test_means_gap_closed_and_seconds_come_from_the_runs(tmp_path):
    module = load_script("scripts/summarize_runs.py")
    dirs = [_run_dir(tmp_path, 0, 0.99, 0.97, 0.98, {"teacher": 60.0, "training": 200.0}),
            _run_dir(tmp_path, 1, 0.98, 0.96, 0.95, {"teacher": 70.0, "training": 210.0})]
    record = module.summarize(dirs)
    assert record["mean_accuracy"] == {"teacher": pytest.approx(0.985), "student (scratch)": pytest.approx(0.965),
                                       "student (distilled)": pytest.approx(0.965)}
    assert record["gap_closed"] == pytest.approx(0.0, abs=1e-9)  # seed 0 gains 0.01, seed 1 loses 0.01
    assert record["distilled_beats_scratch_on_every_seed"] is False
    assert [r["seconds"]["training"] for r in record["runs"]] == [200.0, 210.0]
    dirs[1] = _run_dir(tmp_path, 2, 0.98, 0.96, 0.975, {})
    record = module.summarize(dirs)
    assert record["gap_closed"] == pytest.approx((0.9775 - 0.965) / (0.985 - 0.965))
    assert record["distilled_beats_scratch_on_every_seed"] is True
    assert "| student (distilled) | 0.9800 | 0.9750 | 0.9775 |" in module.table(record)
