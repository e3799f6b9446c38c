"""scripts/distill_classifier_plays.py: the command end to end on the bundled plays (one epoch each)."""

import json
import os

import pytest

from helpers.shared import load_script

pytest.importorskip("keras_hub")


@pytest.mark.slow
def test_the_teacher_preset_the_jsonl_files_and_both_students_on_the_sample(tmp_path):
    script = load_script("scripts/distill_classifier_plays.py")
    out = tmp_path / "result.json"
    assert script.main(["--dir", str(tmp_path / "run"), "--teacher-epochs", "1", "--student-epochs", "1",
                        "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert set(record["test"]) == {"teacher", "fine-tuning", "defaults", "gap_closed"}
    classes = json.loads((tmp_path / "run" / "teacher" / "classes.json").read_text())
    with open(tmp_path / "run" / "test.jsonl") as f:
        labels = {json.loads(line)["label"] for line in f}
    assert labels <= set(classes) and len(classes) == 8
    # The fine-tuning run learns from the labels alone; the defaults also from the teacher's layers.
    assert record["runs"]["fine-tuning"]["flags"] == ["--alpha", "1", "--hidden-weight", "0", "--attention-weight", "0"]
    defaults = json.loads((tmp_path / "run" / "defaults" / "metrics.json").read_text())
    assert defaults["layer_pairs"] == [["transformer_layer_0", "transformer_layer_3"]]
    assert os.path.isfile(tmp_path / "run" / "defaults" / "student" / "classes.json")
