"""The text-classification job: passages held out by whole scenes, the student's start, the metrics, the command."""

import dataclasses
import json
import re
import subprocess
import sys

import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub")

import keras  # noqa: E402

from kdkeras import text  # noqa: E402
from kdkeras.cli import train_classifier  # noqa: E402
from kdkeras.text import classification, classifier  # noqa: E402

L = "abcdefghij"  # letters name plays, scenes and words (digits would be split off as punctuation)
ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "MPLBACKEND": "Agg", "PATH": "/usr/bin:/bin"}
TINY = classifier.ClassifierRecipe(sequence_length=16, teacher_layers=4, student_layers=1, width=16, heads=2,
                                   intermediate=32, student_width=16, student_heads=2, batch_size=16,
                                   teacher_epochs=1, student_epochs=1, dropout=0.0, train_stride=None)
NARROW = dataclasses.replace(TINY, student_width=8, student_heads=2)  # the job's kind of student: its own weights


def _plays(tmp_path, n=3, scenes=6, lines=24, seed=0):
    """A corpus in the Shakespeare file's layout: each scene's lines use the words of its own play and scene
    (``pasbwc``: play a, scene b, word c)."""
    rng = np.random.default_rng(seed)
    plays = []
    for p in range(n):
        body = [f"Play Number {p}", "", "ACT I", ""]
        for s in range(scenes):
            scene = [f"p{L[p]}s{L[s]}w{L[i]}" for i in range(8)]
            own = scene + [f"common{L[i]}" for i in range(4)] + [f"play{L[p]}"] * 4
            body += [f"SCENE {s + 1}. A place.", "", "[Enter SOMEONE]", "", "FIRST LORD:"]
            body += [" ".join([rng.choice(scene)] + list(rng.choice(own, 4))) + rng.choice([",", ".", "!"])
                     for _ in range(lines)]
            body += ["", "SECOND LORD:", f"speak again, my lord {scene[0]}.", ""]
        plays.append("\n".join(body))
    path = tmp_path / "plays.txt"
    path.write_text("\n\n".join(plays) + "\n", encoding="utf-8")
    return path


def test_speech_keeps_spoken_lines_only_and_words_split_punctuation():
    scene = "SCENE II. A room.\n\n[Enter HAMLET]\n\nHAMLET:\nTo be, or not to be: that's the question!\n\nACT III\n"
    assert classification.speech(scene) == "To be, or not to be: that's the question!"
    assert classification.words("To be, or NOT: that's it!") == ["to", "be", ",", "or", "not", ":", "that's", "it",
                                                                 "!"]
    assert [classification.scene_split(i) for i in range(7)] == ["train", "validation", "train", "test", "train",
                                                                 "train", "validation"]


def test_held_out_passages_are_whole_scenes_every_play_in_every_split(tmp_path):
    data = classification.classification_data(text.load_corpus(str(_plays(tmp_path))), sequence_length=12)
    assert data.classes == ["Play Number 0", "Play Number 1", "Play Number 2"]
    assert data.scenes == {"train": 12, "validation": 3, "test": 3}
    split_scenes = {}
    for split in ("train", "validation", "test"):
        passages = getattr(data, split)
        assert set(passages.labels.tolist()) == {0, 1, 2}, split  # every class in every split
        for label, words in zip(passages.labels, passages.texts):
            scene_words = {w for w in words.split() if re.fullmatch("p[a-j]s[a-j]w[a-j]", w)}
            assert scene_words, words
            plays = {w.split("s")[0] for w in scene_words}
            scenes = {w.split("w")[0] for w in scene_words}
            assert plays == {f"p{L[label]}"} and len(scenes) == 1, words  # labelled by its play, never across scenes
            split_scenes.setdefault(split, set()).update(scenes)
    assert split_scenes["validation"] == {"pasb", "pbsb", "pcsb"} and split_scenes["test"] == {"pasd", "pbsd", "pcsd"}
    assert not split_scenes["train"] & (split_scenes["validation"] | split_scenes["test"])
    for name in ("first", "second", "enter", "someone", "scene", "act", "number"):  # no speakers, directions,
        # headings, and no title (it would give the label away)
        assert all(name not in t.split() for t in data.train.texts), name
    assert any("lord" in t.split() for t in data.train.texts)  # the speech itself is kept
    assert "pasdwa" not in data.vocabulary.words and "pasawa" in data.vocabulary.words  # held-out scenes' words are unknown to the vocabulary
    test = data.test
    assert (test.token_ids == classification.UNK).any()


def test_passages_are_cls_words_sep_then_padding():
    vocab = classification.WordVocabulary(["a", "b"])
    pieces = classification._passages(list("abababababa"), length=4, stride=4)
    assert [len(p) for p in pieces] == [4, 4, 3]  # a tail of at least half a passage is kept
    short = classification._passages(list("ababa"), length=4, stride=4)
    assert [len(p) for p in short] == [4]  # a 1-word tail is dropped
    encoded = classification._encode(pieces, [0, 1, 0], vocab, 6)
    assert encoded.token_ids[2].tolist() == [classification.CLS, 4, 5, 4, classification.SEP, classification.PAD]
    assert encoded.padding_mask[2].tolist() == [1, 1, 1, 1, 1, 0]
    assert encoded.inputs()["segment_ids"].sum() == 0


def test_a_corpus_that_is_not_plays_is_refused(tmp_path):
    (tmp_path / "t.txt").write_text("just some text\n" * 200)
    with pytest.raises(ValueError, match="corpus of plays"):
        classification.classification_data(text.load_corpus(str(tmp_path / "t.txt")))
    with pytest.raises(ValueError, match="at least 4 scenes"):
        classification.classification_data(text.load_corpus(str(_plays(tmp_path, scenes=3))))


def test_a_student_with_every_teacher_layer_is_the_teacher_and_a_quarter_copies_the_chosen_layers(tmp_path):
    data = classifier.prepare(text.load_corpus(str(_plays(tmp_path))), TINY)
    teacher = classifier.build_classifier(data.vocabulary.size, 3, 4, TINY, "teacher")
    x = data.validation.inputs(slice(0, 8))
    clone = classifier.student_from_teacher(teacher, 4, TINY)
    np.testing.assert_allclose(clone.predict(x, verbose=0), teacher.predict(x, verbose=0), rtol=1e-4, atol=1e-7)
    student = classifier.student_from_teacher(teacher, 2, TINY, source_layers=[1, 3])
    for i, j in ((0, 1), (1, 3)):
        for a, b in zip(student.backbone.get_layer(f"transformer_layer_{i}").get_weights(),
                        teacher.backbone.get_layer(f"transformer_layer_{j}").get_weights()):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(student.output_dense.get_weights()[0], teacher.output_dense.get_weights()[0])
    assert student.backbone.num_layers == 2
    assert np.abs(student.predict(x, verbose=0) - teacher.predict(x, verbose=0)).max() > 1e-5
    with pytest.raises(ValueError, match="source_layers"):
        classifier.student_from_teacher(teacher, 1, TINY, source_layers=[4])
    narrow = [classifier.student_from_teacher(teacher, 1, NARROW) for _ in range(2)]
    assert narrow[0].backbone.hidden_dim == 8 and narrow[0].backbone.num_heads == 2
    for a, b in zip(narrow[0].get_weights(), narrow[1].get_weights()):  # seeded: the same start every time
        np.testing.assert_array_equal(a, b)


def test_methods_share_the_start_and_the_batches_so_zero_weighted_terms_change_nothing(tmp_path):
    """With hint and attention weights 0, the logits student (cached teacher logits) and the inside-terms student
    (teacher online, a projection from width 8 to 16) end with the same weights; with weight 1 the inside terms
    move them (so the equality says something)."""
    data = classifier.prepare(text.load_corpus(str(_plays(tmp_path))), NARROW)
    teacher = classifier.build_classifier(data.vocabulary.size, 3, 4, NARROW, "teacher")
    zero = dataclasses.replace(NARROW, hint_weight=0.0, attention_weight=0.0)
    weights = {m: classifier.train_student(m, teacher, data, zero, verbose=0).model.get_weights()
               for m in ("logits", "attention")}
    assert max(float(np.abs(a - b).max()) for a, b in zip(weights["logits"], weights["attention"])) < 1e-5
    moved = classifier.train_student("attention", teacher, data, NARROW, verbose=0).model.get_weights()
    assert max(float(np.abs(a - b).max()) for a, b in zip(weights["logits"], moved)) > 1e-4


def test_evaluate_matches_an_independent_numpy_reference(tmp_path):
    data = classifier.prepare(text.load_corpus(str(_plays(tmp_path))), TINY)
    teacher = classifier.build_classifier(data.vocabulary.size, 3, 2, TINY, "teacher")
    student = classifier.build_classifier(data.vocabulary.size, 3, 1, TINY, "student")
    result = classifier.evaluate(student, data.test, teacher)
    zt = teacher.predict(data.test.inputs(), verbose=0).astype(np.float64)
    zs = student.predict(data.test.inputs(), verbose=0).astype(np.float64)
    pt = np.exp(zt) / np.exp(zt).sum(-1, keepdims=True)
    ps = np.exp(zs) / np.exp(zs).sum(-1, keepdims=True)
    assert result["kl_to_teacher"] == pytest.approx(np.mean(np.sum(pt * np.log(pt / ps), -1)), rel=1e-4)
    assert result["agreement"] == pytest.approx(np.mean(zt.argmax(-1) == zs.argmax(-1)))
    assert result["accuracy"] == pytest.approx(np.mean(zs.argmax(-1) == data.test.labels))
    given = classifier.evaluate(student, data.test, teacher_logits=zt)  # the teacher's logits computed once
    assert given["kl_to_teacher"] == pytest.approx(result["kl_to_teacher"], rel=1e-5) and \
        given["agreement"] == result["agreement"]
    rows = classifier.probabilities({"student": student}, data.test, [0, 2], data.classes, top=2)
    assert rows[1]["label"] == data.classes[data.test.labels[2]]
    assert rows[0]["models"]["student"][0][1] == pytest.approx(ps[0].max(), rel=1e-4)
    assert sum(rows[0]["probabilities"]["student"]) == pytest.approx(1.0, abs=1e-3)


def test_help_defaults_are_the_recipes_and_help_needs_no_tensorflow():
    recipe = classifier.ClassifierRecipe()
    for key, value in train_classifier._defaults().items():
        assert getattr(recipe, key) == value, key
    code = ("import sys\nsys.argv[0] = 'kdkeras'\nfrom kdkeras.cli import dispatch\ntry:\n    dispatch.main(['train-classifier', '--help'])\n"
            "except SystemExit:\n    pass\nprint('TF', 'tensorflow' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=ENV)
    assert proc.returncode == 0 and "--hint-loss" in proc.stdout and proc.stdout.strip().endswith("TF False"), \
        proc.stdout[-500:] + proc.stderr[-500:]


@pytest.mark.parametrize("argv, fragment", [
    (["--methods", "hard,dark"], "--methods"),
    (["--data", "missing.txt"], "is not a file"),
    (["--sequence-length", "4"], "--sequence-length"),
    (["--alpha", "2"], "alpha"),
    (["--hint-weight", "-1"], "--hint-weight"),
    (["--teacher-epochs", "0"], "--teacher-epochs"),
])
def test_bad_input_is_one_line_and_exit_2_before_training(tmp_path, capsys, argv, fragment):
    assert train_classifier.main(argv + ["--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_a_teacher_of_other_data_is_refused(tmp_path, capsys):
    other = classifier.build_classifier(50, 2, 1, classifier.ClassifierRecipe(), "teacher")
    other.save(tmp_path / "other.keras")
    code = train_classifier.main(["--data", str(_plays(tmp_path)), "--teacher", str(tmp_path / "other.keras"),
                                  "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "reuse a teacher trained by this job" in err, err


def test_the_job_trains_every_method_and_writes_its_outputs(tmp_path):
    args = train_classifier.build_parser().parse_args(["--data", str(_plays(tmp_path)), "--out", str(tmp_path / "o"),
                                                       "--verbose", "0"])
    train_classifier._check_args(args)
    data = classifier.prepare(text.load_corpus(args.data), NARROW)
    (tmp_path / "o").mkdir()
    record = train_classifier.run(args, NARROW, data)
    names = ["teacher"] + [train_classifier.LABELS[m] for m in train_classifier.METHODS]
    assert list(record["models"]) == names and record["split"] == "test"
    assert set(record["gap_closed"]) == set(names[2:])
    for name in names[1:]:
        m = record["models"][name]
        assert 0 <= m["agreement"] <= 1 and m["kl_to_teacher"] >= 0 and m["parameters"] < \
            record["models"]["teacher"]["parameters"]
    for method in train_classifier.METHODS:
        assert (tmp_path / "o" / f"student_{method}.keras").stat().st_size > 0
    report = (tmp_path / "o" / "report.md").read_text()
    assert "| student (logits + hidden + attention) |" in report and report.count("True play") == 4


@pytest.mark.slow
def test_the_job_runs_on_the_bundled_sample_and_writes_its_outputs(tmp_path):
    from kdkeras.cli import dispatch

    out = tmp_path / "run"
    assert dispatch.main(["train-classifier", "--teacher-epochs", "1", "--student-epochs", "1", "--methods",
                          "attention,hard", "--split", "validation", "--verbose", "0", "--out", str(out)]) == 0
    record = json.loads((out / "metrics.json").read_text())
    assert record["classes"] == list(text.SAMPLE_PLAYS) and record["split"] == "validation"
    assert list(record["models"]) == ["teacher", "student (hard labels)", "student (logits + hidden + attention)"]
    assert set(record["gap_closed"]) == {"student (logits + hidden + attention)"}
    assert record["models"]["student (hard labels)"]["parameters"] < record["models"]["teacher"]["parameters"]
    assert len(record["examples"]) == 4 and "True play" in (out / "report.md").read_text()
    for name in ("teacher.keras", "student_hard.keras", "student_attention.keras", "history.png", "probabilities.png"):
        assert (out / name).stat().st_size > 0
    student = keras.models.load_model(out / "student_attention.keras", compile=False)
    assert student.backbone.num_layers == 1


@pytest.mark.parametrize("content, fragment", [
    (b"\xff\xfe\x00broken", "not UTF-8"),
    (b"", "is empty"),
    (b"a text without plays\n" * 100, "corpus of plays"),
])
def test_broken_data_files_are_refused_in_one_line_and_leave_no_run_folder(tmp_path, capsys, content, fragment):
    data = tmp_path / "data.txt"
    data.write_bytes(content)
    assert train_classifier.main(["--data", str(data), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_an_out_that_is_a_file_is_refused_and_kept(tmp_path, capsys):
    out = tmp_path / "taken"
    out.write_text("keep me")
    assert train_classifier.main(["--out", str(out)]) == 2
    assert "is a file" in capsys.readouterr().err and out.read_text() == "keep me"


def test_a_teacher_near_chance_is_named_in_a_warning():
    """Best validation accuracy within half a class share of chance (the majority label or 1 / C) warns."""
    from kdkeras.text.classifier import near_chance

    labels = np.array([0] * 6 + [1] * 2 + [2] * 2 + [3] * 2 + [4] * 2 + [5] * 2 + [6] * 2 + [7] * 2)  # 8 classes
    majority = 6 / 20  # above 1 / 8: the constant guess "class 0" scores 0.30
    assert "near chance (0.300 for 8 classes)" in near_chance({"val_accuracy": [0.1, 0.3, 0.35]}, labels, 8)
    assert near_chance({"val_accuracy": [0.1, majority + 0.5 / 8 + 0.01]}, labels, 8) is None
    assert near_chance({"val_accuracy": [0.2]}, np.arange(20) % 4, 4) is not None  # 1 / 4 + 0.125 = 0.375
    assert near_chance({"val_accuracy": [0.4]}, np.arange(20) % 4, 4) is None
    assert near_chance({}, labels, 8) is None
