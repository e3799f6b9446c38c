"""scripts/summarize_classification.py: the result file behind the README's classification table, from made-up runs."""

import json

import pytest

from helpers.shared import load_script


def _run(folder, seed, teacher, hard, attention):
    folder.mkdir()
    models = {"teacher": {"accuracy": teacher, "macro_f1": teacher - 0.01, "parameters": 100},
              "student (hard labels)": {"accuracy": hard, "macro_f1": hard, "kl_to_teacher": 0.9, "agreement": 0.5,
                                        "parameters": 10},
              "student (logits + hidden + attention)": {"accuracy": attention, "macro_f1": attention,
                                                        "kl_to_teacher": 0.4, "agreement": 0.7, "parameters": 10}}
    gap = {"student (logits + hidden + attention)": (attention - hard) / (teacher - hard)}
    record = {"recipe": {"seed": seed}, "seconds": {"teacher": 60.0, "hard": 10.0}, "models": models,
              "gap_closed": gap, "data": "x", "split": "test", "passages": {"test": 50}, "scenes": {"test": 5},
              "provenance": {}}
    (folder / "metrics.json").write_text(json.dumps(record))
    return str(folder)


def test_gap_closed_is_taken_on_the_mean_accuracies_and_kept_per_seed(tmp_path):
    script = load_script("scripts/summarize_classification.py")
    runs = [_run(tmp_path / "a", 0, 0.40, 0.30, 0.35), _run(tmp_path / "b", 1, 0.50, 0.30, 0.32)]
    out = tmp_path / "out.json"
    assert script.main(["--runs", *runs, "--json", str(out), "--md", str(tmp_path / "out.md")]) == 0
    record = json.loads(out.read_text())
    name = "student (logits + hidden + attention)"
    # Means: teacher 0.45, hard 0.30, attention 0.335 -> 0.035 / 0.15, not the mean of 50 % and 10 %.
    assert record["gap_closed_of_means"][name] == pytest.approx(0.035 / 0.15)
    assert record["gap_closed_per_seed"][name] == pytest.approx([0.5, 0.1])
    assert record["seconds_per_run"] == [70.0, 70.0]
    md = (tmp_path / "out.md").read_text()
    assert "| teacher | 100 | 0.450 (0.400, 0.500) |" in md and "| 23% |" in md
