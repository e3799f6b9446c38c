"""The text main job (scripts/train_text.py, kdkeras train-text) and its data: splits, windows, stages."""

import dataclasses
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from kdkeras import text
from kdkeras.cli import train_text
from kdkeras.text import experiment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", MPLBACKEND="Agg")
TINY = ["--teacher-steps", "20", "--student-steps", "20", "--context", "16", "--batch-size", "8", "--verbose", "0"]


def _plays_file(tmp_path, n=4, lines=60, seed=0):
    """A small corpus in the Shakespeare file's layout: n plays, each with its own words."""
    rng = np.random.default_rng(seed)
    plays = []
    for p in range(n):
        words = [f"w{p}x{i}" for i in range(30)]
        body = "\n".join(" ".join(rng.choice(words, 6)) for _ in range(lines))
        plays.append(f"Play Number {p}\n\nACT I\n\nSCENE I. Somewhere.\n\nSPEAKER:\n{body}\n")
    path = tmp_path / "plays.txt"
    path.write_text("\n".join(plays), encoding="utf-8")
    return path


def test_held_out_text_is_whole_documents_never_seen_in_training():
    corpus = text.load_corpus("sample")
    assert corpus.kind == "plays" and [n for n, _ in corpus.documents] == list(text.SAMPLE_PLAYS)
    splits = text.split_corpus(corpus)
    train = "".join(t for _, t in splits["train"])
    for part in ("validation", "test"):
        for name, body in splits[part]:
            assert name not in [n for n, _ in splits["train"]]
            long_lines = [line for line in body.split("\n") if len(line) > 60]
            assert long_lines and not any(line in train for line in long_lines[:200]), name
    # The whole corpus: every 19th play held out, validation and test spread over the genres.
    assert text.held_out_positions(38) == ([4, 23], [13, 32])
    assert text.held_out_positions(8) == ([6], [7])


def test_a_single_text_is_cut_into_contiguous_blocks_in_order(tmp_path):
    body = "".join(f"line {i} of a plain text without plays\n" for i in range(400))
    path = tmp_path / "plain.txt"
    path.write_text(body, encoding="utf-8")
    splits = text.split_corpus(text.load_corpus(str(path)))
    parts = [splits[k][0][1] for k in ("train", "validation", "test")]
    assert "".join(parts) == body  # contiguous and complete: nothing interleaved or lost
    assert 0.85 < len(parts[0]) / len(body) < 0.95 and all(p.startswith("line ") for p in parts)


def test_the_students_start_from_the_same_weights_and_see_the_same_batches(tmp_path):
    """With alpha = 1 (hard labels only) the distilled student must end exactly where the scratch one does."""
    recipe = experiment.TextRecipe(context=16, batch_size=8, student_steps=30, epoch_steps=10, alpha=1.0,
                                   student_layers=1, student_width=16, teacher_layers=1, teacher_width=16, top_k=0)
    data = experiment.prepare(text.load_corpus(str(_plays_file(tmp_path))), recipe)
    a, b = experiment.student_model(data, recipe), experiment.student_model(data, recipe)
    for x, y in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(x, y)
    teacher = experiment.teacher_model(data, recipe)
    scratch = experiment.train_language_model("scratch", a, data.student_train, recipe.student_steps, recipe,
                                              verbose=0).model
    distilled = experiment.distil(b, teacher, data.student_train, recipe, verbose=0).model
    gaps = [float(np.abs(x - y).max()) for x, y in zip(scratch.get_weights(), distilled.get_weights())]
    assert max(gaps) < 1e-4, gaps
    # And a different order (another seed) would show: the test can fail.
    other = experiment.train_language_model("scratch", experiment.student_model(data, recipe),
                                            data.student_train, recipe.student_steps,
                                            dataclasses.replace(recipe, seed=1), verbose=0).model
    assert max(float(np.abs(x - y).max()) for x, y in zip(scratch.get_weights()[2:], other.get_weights()[2:])) > 1e-3


@pytest.mark.slow
def test_the_job_runs_end_to_end_and_writes_every_output(tmp_path):
    out = tmp_path / "run"
    data = _plays_file(tmp_path)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "train_text.py"), "--data", str(data),
                           "--out", str(out), *TINY], capture_output=True, text=True, env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("teacher.keras", "student.keras", "student_scratch.keras", "vocabulary.json", "metrics.json",
                 "report.md", "samples.md", "history.png"):
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    models = metrics["models"]
    assert set(models) == {"teacher", "student (distilled)", "student (scratch)"}
    t, d, s = (models[k]["bits_per_character"] for k in ("teacher", "student (distilled)", "student (scratch)"))
    np.testing.assert_allclose(metrics["gap_closed"], (s - d) / (s - t))
    assert models["student (distilled)"]["parameters"] * 8 <= models["teacher"]["parameters"]
    assert metrics["documents"]["test"] == ["Play Number 3"] and metrics["documents"]["validation"] == ["Play Number 2"]
    assert "Gap closed in test bits per character" in proc.stdout
    samples = (out / "samples.md").read_text()
    assert samples.count("## Prompt") == 3 and samples.count("**student (scratch)**") == 3
    # The saved student loads and predicts the next character of the test text.
    student = keras.models.load_model(out / "student.keras")
    assert student.outputs[0].shape[-1] == len(json.loads((out / "vocabulary.json").read_text())["characters"]) + 1
    # A reused teacher: the same run without training it again.
    again = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "train_text.py"), "--data", str(data),
                            "--out", str(tmp_path / "again"), "--teacher", str(out / "teacher.keras"), *TINY],
                           capture_output=True, text=True, env=ENV, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    reused = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert "teacher" not in reused["seconds"]
    assert reused["models"]["teacher"]["bits_per_character"] == pytest.approx(t, rel=1e-6)


@pytest.mark.parametrize("args, fragment", [
    (["--data", "/no/such/text.txt"], "/no/such/text.txt"),
    (["--student-steps", "0"], "--student-steps"),
    (["--transfer-fraction", "0"], "--transfer-fraction"),
    (["--loss", "kullback"], "kullback"),
    (["--temperature", "0"], "temperature"),
    (["--on-policy-fraction", "0.5", "--max-new-tokens", "16"], "--max-new-tokens"),
])
def test_user_mistakes_exit_2_with_one_line_and_no_run_folder(tmp_path, args, fragment):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "train_text.py"), "--out", str(out),
                           *TINY, *args], capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert not out.exists()


def test_a_teacher_of_another_vocabulary_and_an_out_that_is_a_file_are_refused(tmp_path):
    wrong = keras.Sequential([keras.Input((None,), dtype="int32"), keras.layers.Embedding(5, 4),
                              keras.layers.Dense(5)])
    wrong.save(tmp_path / "wrong.keras")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for args, fragment in ((["--teacher", str(tmp_path / "wrong.keras"), "--out", str(tmp_path / "o")],
                            "predicts 5 characters"), (["--out", str(a_file)], "is a file")):
        proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "train_text.py"), *TINY, *args],
                              capture_output=True, text=True, env=ENV, timeout=300)
        assert proc.returncode == 2 and fragment in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, \
            proc.stderr
    assert not (tmp_path / "o").exists()


def test_help_defaults_are_the_recipes_and_help_needs_no_tensorflow(tmp_path):
    recipe = experiment.TextRecipe()
    for key, value in train_text._defaults().items():
        assert getattr(recipe, key) == value, key
    code = ("import sys\nfrom kdkeras.cli import dispatch\nfor argv in (['--help'], ['train-text', '--help'], "
            "['train-mnist', '--help'], ['distill', '--help'], ['tune', '--help'], ['distill-classifier', '--help']):\n"
            "    try:\n        dispatch.main(argv)\n    except SystemExit:\n        pass\n"
            "print('TF', 'tensorflow' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", "import sys; sys.argv[0] = 'kdkeras'\n" + code],
                          capture_output=True, text=True, timeout=120, env=ENV, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for command in ("train-mnist", "train-text", "distill", "tune", "distill-classifier"):
        assert command in proc.stdout
    assert "usage: kdkeras distill-classifier" in proc.stdout and "--hidden-weight" in proc.stdout
    assert "usage: kdkeras train-text" in proc.stdout and proc.stdout.strip().endswith("TF False"), proc.stdout[-500:]


def test_the_kdkeras_command_runs_the_mnist_job_as_before(tmp_path):
    """`kdkeras train-mnist` (and so `python -m kdkeras train-mnist`) is the same job as scripts/train_mnist.py."""
    from kdkeras.cli import dispatch

    out = tmp_path / "mnist"
    assert dispatch.main(["train-mnist", "--data", "sample", "--teacher-epochs", "1", "--student-epochs", "1",
                          "--verbose", "0", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"teacher", "student (distilled)", "student (scratch)"} <= set(metrics["models"])
    for name in ("teacher.keras", "student.keras", "student_scratch.keras", "report.md", "history.png"):
        assert (out / name).stat().st_size > 0


def test_the_distilled_student_trains_alike_from_the_cached_and_the_online_teacher(tmp_path):
    """With top_k >= the vocabulary the cache holds the whole distribution: both paths give the same weights."""
    recipe = experiment.TextRecipe(context=16, batch_size=8, student_steps=20, epoch_steps=10, student_layers=1,
                                   student_width=16, teacher_layers=1, teacher_width=16, top_k=1000)
    data = experiment.prepare(text.load_corpus(str(_plays_file(tmp_path))), recipe)
    teacher = experiment.teacher_model(data, recipe)
    cached = experiment.distil(experiment.student_model(data, recipe), teacher, data.student_train,
                               dataclasses.replace(recipe, cache_min_passes=0.0), verbose=0).model
    online = experiment.distil(experiment.student_model(data, recipe), teacher, data.student_train,
                               dataclasses.replace(recipe, top_k=0), verbose=0).model
    gaps = [float(np.abs(a - b).max()) for a, b in zip(cached.get_weights(), online.get_weights())]
    assert max(gaps) < 1e-3, gaps
    moved = [float(np.abs(a - b).max()) for a, b in zip(cached.get_weights(),
                                                         experiment.student_model(data, recipe).get_weights())]
    assert max(moved) > 1e-3  # training happened, so equal weights say something
