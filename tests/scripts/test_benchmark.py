"""scripts/time_to_accuracy.py end to end on the sample, and how it reads time to accuracy."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from helpers.shared import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tta():
    return load_script("scripts/time_to_accuracy.py")


def test_first_reach_counts_epochs_and_cumulative_seconds():
    tta = _tta()
    assert tta.first_reach([0.5, 0.9, 0.95, 0.93], [2.0, 3.0, 4.0, 5.0], 0.92) == (3, 9.0)
    assert tta.first_reach([0.5, 0.9], [2.0, 3.0], 0.9) == (2, 5.0)  # reaching it exactly counts
    assert tta.first_reach([0.5, 0.9], [2.0, 3.0], 0.95) == (None, None)


@pytest.mark.slow
def test_time_to_accuracy_runs_every_trainer_from_the_same_start(tmp_path):
    out, result = tmp_path / "b.md", tmp_path / "b.json"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "time_to_accuracy.py"), "--to-accuracy", "0.5", "--data", "sample",
         "--seeds", "0", "--max-epochs", "2", "--teacher-epochs", "1", "--out", str(out), "--json", str(result)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(result.read_text())
    (run,) = record["runs"]
    trainers = run["trainers"]
    assert set(trainers) == {"student alone", "keras.distillation", "keras.io example", "kdkeras online",
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


def test_lever_trainers_change_one_thing_each(trained_teacher, sample_arrays):
    import keras

    import kdkeras

    tta = _tta()
    (x, y), _ = sample_arrays
    train = (x[:512], y[:512])
    settings = {"temperature": 4.0, "alpha": 0.1, "batch_size": 64, "learning_rate": 1e-3, "seed": 0,
                "steps_per_execution": 8, "large_batch": 256}
    made = {}
    for name in ("kdkeras cached", "kdkeras cached +spe", "kdkeras cached +jit", "kdkeras cached +batch"):
        model, data, setup = tta.make_trainer(name, kdkeras.build_student(seed=1), trained_teacher, train, settings)
        assert setup > 0  # every cached trainer builds its cache on its own clock
        made[name] = (model, next(iter(data)))
    spe = {n: m.steps_per_execution for n, (m, _) in made.items()}
    assert spe == {"kdkeras cached": 1, "kdkeras cached +spe": 8, "kdkeras cached +jit": 1, "kdkeras cached +batch": 1}
    assert [n for n, (m, _) in made.items() if m.jit_compile is True] == ["kdkeras cached +jit"]
    batches = {n: int(b[1].shape[0]) for n, (_, b) in made.items()}
    assert batches == {"kdkeras cached": 64, "kdkeras cached +spe": 64, "kdkeras cached +jit": 64,
                       "kdkeras cached +batch": 256}
    lrs = {n: float(keras.ops.convert_to_numpy(m.optimizer.learning_rate)) for n, (m, _) in made.items()}
    assert lrs["kdkeras cached +batch"] == pytest.approx(2e-3) and lrs["kdkeras cached +spe"] == pytest.approx(1e-3)

    # Both levers at once, with the large batch's learning rate given instead of the square-root rule.
    model, data, _ = tta.make_trainer("kdkeras cached +spe+batch", kdkeras.build_student(seed=1), trained_teacher,
                                      train, {**settings, "large_batch_learning_rate": 4e-3})
    assert (model.steps_per_execution, int(next(iter(data))[1].shape[0])) == (8, 256)
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(4e-3)
    # Keras' own trainer on the same larger batch and rate: a like-for-like reference for the lever.
    model, data, setup = tta.make_trainer("keras.distillation +batch", kdkeras.build_student(seed=1), trained_teacher,
                                          train, {**settings, "large_batch_learning_rate": 4e-3})
    assert type(model).__module__.startswith("keras") and setup == 0.0
    assert int(next(iter(data))[1].shape[0]) == 256
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(4e-3)

    # +cosine: the same rate at the start, decayed to 0 over decay_epochs epochs of ceil(512 / 256) = 2 steps.
    for name in ("kdkeras cached +spe+batch+cosine", "keras.distillation +batch+cosine"):
        model, data, _ = tta.make_trainer(name, kdkeras.build_student(seed=1), trained_teacher, train,
                                          {**settings, "large_batch_learning_rate": 4e-3, "decay_epochs": 3})
        schedule = model.optimizer._learning_rate
        assert int(next(iter(data))[1].shape[0]) == 256
        rates = [float(schedule(step)) for step in (0, 3, 6, 9)]
        assert rates == pytest.approx([4e-3, 2e-3, 0.0, 0.0], abs=1e-9), name

    # The bare step trains the student on the cached logits from a Python loop: one epoch moves the weights.
    student = kdkeras.build_student(seed=1)
    before = [w.copy() for w in student.get_weights()]
    bare, data, setup = tta.make_trainer("bare step", student, trained_teacher, train, settings)
    assert data is None and setup > 0
    bare.fit(None, epochs=1)
    assert any(not np.array_equal(a, b) for a, b in zip(before, student.get_weights()))


def test_summary_reports_each_epoch_against_the_bare_step():
    tta = _tta()
    run = {"seed": 0, "teacher_accuracy": 0.99, "trainers": {
        "keras.distillation": {"setup_seconds": 0.0, "epoch_seconds": [6.0, 6.0], "accuracy": [0.98, 0.99]},
        "kdkeras cached": {"setup_seconds": 1.0, "epoch_seconds": [3.0, 3.0], "accuracy": [0.98, 0.99]},
        "bare step": {"setup_seconds": 1.0, "epoch_seconds": [2.0, 2.0], "accuracy": [0.97, 0.99]}}}
    summary = tta.summarize([run], 0.985)  # no scratch trainer in this run
    assert summary["kdkeras cached"]["epoch_vs_bare_step"] == pytest.approx(1.5)
    assert summary["keras.distillation"]["epoch_vs_bare_step"] == pytest.approx(3.0)
    assert summary["kdkeras cached"]["median_seconds_to_target"] == pytest.approx(7.0)  # cache + 2 epochs
    assert summary["kdkeras cached"]["vs_keras_distillation"] == pytest.approx(7.0 / 12.0)
    assert summary["kdkeras cached"]["median_seconds_to_scratch_best"] is None
    # In the report, a column whose reference trainer did not run says so ("—"), not "not reached".
    record = {"summary": summary, "runs": [run], "provenance": {"date": "2026-12-02", "command": "c", "machine": "m",
                                                               "tensorflow": "t", "keras": "k", "data": "d"},
              "settings": {"target": 0.985, "pair": "article", "teacher_epochs": 1, "batch_size": 64,
                           "learning_rate": 1e-3, "temperature": 4.0, "alpha": 0.1, "max_epochs": 2}}
    assert "| kdkeras cached | 7.0 | 2 | 0.58 | 0.58 | — | 0.9900 | 3.00 | 1.50 |" in tta.markdown(record)


def test_the_steady_ratio_takes_each_trainers_median_epoch_so_one_stall_does_not_decide_it():
    tta = _tta()
    # keras.distillation reaches 0.985 in epoch 3, kdkeras in epoch 2, whose clock a 20 s stall hit.
    runs = [{"seed": s, "teacher_accuracy": 0.99, "trainers": {
        "keras.distillation": {"setup_seconds": 0.0, "epoch_seconds": [10.0, 10.0, 10.0, 12.0],
                               "accuracy": [0.97, 0.98, 0.986, 0.99]},
        "kdkeras cached": {"setup_seconds": 2.0, "epoch_seconds": [3.0, 20.0, 3.0, 3.0],
                           "accuracy": [0.98, 0.985, 0.99, 0.99]}}} for s in (0, 1)]
    runs[1]["trainers"]["kdkeras cached"]["accuracy"] = [0.98, 0.98, 0.98, 0.98]  # this seed never reaches it
    summary = tta.summarize(runs, 0.985)
    reached = summary["kdkeras cached"]["per_seed"][0]
    assert reached["seconds_to_target"] == pytest.approx(25.0)  # the clock: 2 + 3 + 20
    assert reached["steady_seconds_to_target"] == pytest.approx(8.0)  # 2 + 2 epochs x the median 3 s
    assert summary["kdkeras cached"]["per_seed"][1]["steady_seconds_to_target"] is None
    assert summary["kdkeras cached"]["steady_vs_keras_distillation"] is None  # a seed not reached: no median
    assert summary["keras.distillation"]["median_steady_seconds_to_target"] == pytest.approx(30.0)  # 3 x 10
    one = tta.summarize(runs[:1], 0.985)
    assert one["kdkeras cached"]["steady_vs_keras_distillation"] == pytest.approx(8.0 / 30.0)
    assert one["kdkeras cached"]["vs_keras_distillation"] == pytest.approx(25.0 / 30.0)


def test_choosing_a_setting_evaluates_on_training_digits_held_out_never_on_the_test_split(sample_arrays):
    benchmark = load_script("scripts/time_to_accuracy.py")
    (x, y), (x_test, y_test) = sample_arrays
    assert benchmark._evaluated_on(sample_arrays, None, 0) is sample_arrays  # reporting: the test split
    (x_fit, y_fit), (x_val, y_val) = benchmark._evaluated_on(sample_arrays, 500, 0)
    assert len(y_val) == 500 and len(y_fit) == len(y) - 500 and set(np.unique(y_val)) == set(range(10))
    as_rows = lambda a: {r.tobytes() for r in a}  # noqa: E731
    assert as_rows(x_val) <= as_rows(x) and not as_rows(x_val) & as_rows(x_test)
    assert not as_rows(x_val) & as_rows(x_fit)  # held out from what the students train on
    again = benchmark._evaluated_on(sample_arrays, 500, 0)[1][1]
    other = benchmark._evaluated_on(sample_arrays, 500, 1)[1][1]
    assert np.array_equal(again, y_val) and not np.array_equal(other, y_val)  # a function of the seed


def test_evaluation_is_outside_every_clock_and_the_cache_build_inside_the_cached_one(sample_arrays, monkeypatch):
    import time
    import types

    import kdkeras.evaluation

    tta = _tta()
    (x, y), (x_test, y_test) = sample_arrays
    skipped, real = [0.0], kdkeras.evaluation.accuracy

    def costly_accuracy(*args, **kwargs):  # every evaluation moves the benchmark's clock by 1,000 s
        skipped[0] += 1000.0
        return real(*args, **kwargs)

    monkeypatch.setattr(kdkeras.evaluation, "accuracy", costly_accuracy)
    monkeypatch.setattr(tta, "time", types.SimpleNamespace(perf_counter=lambda: time.perf_counter() + skipped[0]))
    settings = {"teacher_epochs": 1, "max_epochs": 2, "temperature": 4.0, "alpha": 0.1, "batch_size": 64,
                "learning_rate": 1e-3, "steps_per_execution": 4, "large_batch": 128}
    pair = {"teacher": lambda seed: __import__("kdkeras").build_teacher(seed=seed),
            "student": lambda seed: __import__("kdkeras").build_mlp((32,), seed=seed)}
    names = ("scratch", "kdkeras cached", "kdkeras cached +spe")
    run = tta.run_seed(0, pair, ((x[:640], y[:640]), (x_test[:200], y_test[:200])), settings, lambda m: None, names)
    assert skipped[0] == 1000.0 * (1 + 2 * len(names))  # the teacher once, every student after every epoch
    for name in names:
        t = run["trainers"][name]
        assert len(t["accuracy"]) == len(t["epoch_seconds"]) == 2
        assert all(0 < s < 100 for s in t["epoch_seconds"]), (name, t["epoch_seconds"])  # no evaluation inside
    assert run["trainers"]["scratch"]["setup_seconds"] == 0.0
    assert all(0 < run["trainers"][n]["setup_seconds"] < 100 for n in names[1:])  # the cache, on its own clock
    summary = tta.summarize([run], 0.0)
    for name in names:
        t = run["trainers"][name]
        assert summary[name]["per_seed"][0]["seconds_to_target"] == pytest.approx(
            t["setup_seconds"] + t["epoch_seconds"][0])


def test_cached_trainers_call_the_teacher_in_inference_batches(trained_teacher, sample_arrays, monkeypatch):
    import kdkeras

    tta = _tta()
    (x, y), _ = sample_arrays
    calls = []
    original = kdkeras.cache_teacher_logits

    def recording(teacher, data, **kw):
        calls.append(kw)
        return original(teacher, data, **kw)

    monkeypatch.setattr(kdkeras, "cache_teacher_logits", recording)
    settings = {"temperature": 4.0, "alpha": 0.1, "batch_size": 64, "learning_rate": 1e-3, "seed": 0,
                "steps_per_execution": 8, "large_batch": 256, "inference_batch_size": 500}
    for name in ("kdkeras cached", "kdkeras cached +spe+batch"):
        _, data, _ = tta.make_trainer(name, kdkeras.build_student(seed=1), trained_teacher, (x[:512], y[:512]),
                                      settings)
    assert [(c["batch_size"], c["inference_batch_size"]) for c in calls] == [(64, 500), (256, 500)]
    assert int(next(iter(data))[1].shape[0]) == 256  # the student still trains on its own batch


def test_resummarize_recomputes_an_earlier_files_summary_from_its_epochs(tmp_path, capsys):
    bench = load_script("scripts/time_to_accuracy.py")
    runs = [{"seed": 0, "teacher_accuracy": 0.99, "trainers": {
        "keras.distillation": {"setup_seconds": 0.0, "epoch_seconds": [10.0, 10.0, 10.0],
                               "accuracy": [0.98, 0.99, 0.99]},
        "kdkeras cached": {"setup_seconds": 1.0, "epoch_seconds": [2.0, 9.0, 3.0], "accuracy": [0.97, 0.988, 0.99]}}}]
    record = {"provenance": {"date": "2026-12-02T10:00:00", "command": "scripts/benchmark.py --to-accuracy 0.987",
                             "machine": "m", "tensorflow": "t", "keras": "k", "data": "d"},
              "settings": {"target": 0.987, "pair": "mlp", "teacher_epochs": 6, "batch_size": 64,
                           "learning_rate": 1e-3, "temperature": 4.0, "alpha": 0.1, "max_epochs": 3},
              "runs": runs, "summary": {"stale": True}}
    path = tmp_path / "old.json"
    path.write_text(json.dumps(record))
    assert bench.main(["--resummarize", str(path)]) == 0
    new = json.loads(path.read_text())
    assert new["runs"] == runs and new["provenance"] == record["provenance"]  # the measurements are kept
    mine = new["summary"]["kdkeras cached"]
    assert "stale" not in new["summary"] and mine["median_seconds_to_target"] == pytest.approx(12.0)  # 1 + 2 + 9
    assert mine["vs_keras_distillation"] == pytest.approx(0.6)  # against 20 s: the file's own target, 0.987
    assert mine["steady_vs_keras_distillation"] == pytest.approx((1.0 + 2 * 3.0) / 20.0)  # median epoch 3 s
    assert "--resummarize" in new["resummarized"]["command"]
    assert "| kdkeras cached | 12.0 | 2 | 0.60 | 0.35 |" in capsys.readouterr().out
