"""scripts/summarize_text_runs.py: the result file behind the README's text table, from made-up runs."""

import json

import pytest

from helpers.shared import load_script


def _run(folder, seed, teacher, scratch, distilled):
    folder.mkdir()
    models = {"teacher": {"bits_per_character": teacher},
              "student (scratch)": {"bits_per_character": scratch, "kl_to_teacher": 0.5, "agreement": 0.6},
              "student (distilled)": {"bits_per_character": distilled, "kl_to_teacher": 0.3, "agreement": 0.7}}
    record = {"recipe": {"seed": seed, "student_steps": 1500}, "seconds": {"scratch": 1.0}, "models": models,
              "gap_closed": (scratch - distilled) / (scratch - teacher), "data": "x", "documents": {},
              "characters": {}, "provenance": {}}
    (folder / "metrics.json").write_text(json.dumps(record))
    return str(folder)


def test_gap_closed_is_taken_on_the_means_and_per_seed(tmp_path):
    script = load_script("scripts/summarize_text_runs.py")
    runs = [_run(tmp_path / "a", 0, 2.0, 3.0, 2.5), _run(tmp_path / "b", 1, 2.0, 4.0, 3.8)]
    out = tmp_path / "out.json"
    assert script.main(["--runs", *runs, "--json", str(out), "--md", str(tmp_path / "out.md")]) == 0
    record = json.loads(out.read_text())["equal_steps"]
    # Means: teacher 2.0, scratch 3.5, distilled 3.15 -> (3.5 - 3.15) / 1.5; not the mean of 50 % and 10 %.
    assert record["gap_closed_of_means"] == pytest.approx(0.35 / 1.5)
    assert [s["gap_closed"] for s in record["seeds"]] == pytest.approx([0.5, 0.1])
    assert "| mean | 2.000 | 3.500 | 3.150 | 23% |" in (tmp_path / "out.md").read_text()
