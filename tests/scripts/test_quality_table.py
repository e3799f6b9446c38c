"""scripts/quality_table.py: the per-pair quality table is read correctly from the result files."""

import json

import pytest

from helpers.shared import load_script


def _main_job(seeds, data):
    runs = [{"seed": seed, "data": data, "accuracy": {"teacher": t, "student (scratch)": s, "student (distilled)": d},
             "agreement": {"student (scratch)": 0.97 + seed / 100, "student (distilled)": 0.98}}
            for seed, (t, s, d) in seeds.items()]
    return {"runs": runs}


def _hinton():
    def seed(n, big, cnn, scratch, from_big, from_cnn):
        rows = {"big teacher": {"test_errors": big}, "cnn teacher": {"test_errors": cnn},
                "small scratch": {"test_errors": scratch},
                "from big": {"test_errors": from_big, "test_agreement": 0.99},
                "from cnn": {"test_errors": from_cnn, "test_agreement": 0.95 + n / 100}}
        return {"seed": n, "rows": rows, "keys": {"big T=20": "from big", "cnn T=20": "from cnn"}}

    return {"provenance": {"data": "made in the test"}, "test_digits": 10000,
            "seeds": [seed(0, 120, 50, 160, 130, 80), seed(1, 100, 60, 140, 110, 70)]}


def test_accuracies_become_errors_on_the_split_named_and_the_gap_is_closed_in_errors(tmp_path):
    module = load_script("scripts/quality_table.py")
    sample = tmp_path / "sample.json"
    sample.write_text(json.dumps(_main_job({0: (0.99, 0.97, 0.985), 1: (0.98, 0.96, 0.95)},
                                           "a sample, 4,000 train / 1,000 test")))
    record = module.build([str(sample)], hinton=None)
    (row,) = record["pairs"]
    assert row["test_digits"] == 1000
    assert row["test_errors"]["teacher"] == {"mean": 15.0, "per_seed": [10, 20]}
    assert row["test_errors"]["scratch"]["per_seed"] == [30, 40]
    assert row["test_errors"]["distilled"]["per_seed"] == [15, 50]
    # Per seed: 15 of 20 errors closed, then 10 errors lost on a gap of 20.
    assert row["gap_closed"]["per_seed"] == pytest.approx([0.75, -0.5])
    # On the means (15, 35, 32.5): 2.5 of 20 -- not the mean of the per-seed shares (0.125).
    assert row["gap_closed"]["of_means"] == pytest.approx(2.5 / 20)
    assert row["agreement"]["scratch"]["per_seed"] == pytest.approx([0.97, 0.98])
    assert "| 15.0 (10, 20) | 35.0 (30, 40) | 32.5 (15, 50) | 12% (75%, -50%) |" in module.markdown(record)


def test_each_mlp_pair_is_measured_against_its_own_teacher(tmp_path):
    module = load_script("scripts/quality_table.py")
    hinton = tmp_path / "hinton.json"
    hinton.write_text(json.dumps(_hinton()))
    big, cnn = module.build([], hinton=str(hinton))["pairs"]
    assert big["test_errors"]["teacher"]["per_seed"] == [120, 100]
    assert big["gap_closed"]["per_seed"] == pytest.approx([30 / 40, 30 / 40])
    assert cnn["test_errors"]["teacher"]["per_seed"] == [50, 60]
    assert cnn["test_errors"]["distilled"]["per_seed"] == [80, 70]
    assert cnn["gap_closed"]["of_means"] == pytest.approx((150 - 75) / (150 - 55))
    assert cnn["agreement"]["distilled"]["per_seed"] == pytest.approx([0.95, 0.96])
    assert cnn["agreement"]["scratch"]["mean"] is None  # not recorded by reproduce_hinton.py: shown as "—"


def test_a_data_label_without_the_test_size_is_refused(tmp_path):
    module = load_script("scripts/quality_table.py")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_main_job({0: (0.99, 0.97, 0.98)}, "somewhere")))
    with pytest.raises(ValueError, match="test-split size"):
        module.build([str(bad)], hinton=None)
