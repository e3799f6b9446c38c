"""`kdkeras distill`: your own teacher and student on data made here — an npz of RGB 32x32 images with a
teacher that expects another size, an image folder, a tfds set — and one-line errors."""

import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import kdkeras
from kdkeras import commands

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", MPLBACKEND="Agg")


def _run(*argv):
    return commands.main(["distill", *map(str, argv), "--verbose", "0"])


def _metrics(out):
    return json.loads((out / "metrics.json").read_text())["models"]


@pytest.mark.slow
def test_rgb_npz_with_a_teacher_of_another_input_size(sample_arrays, tmp_path):
    """RGB 32x32 images; the teacher expects 56x56 grey digits; the student is built for the data."""
    (x, y), _ = sample_arrays
    keras.utils.set_random_seed(0)
    rgb = np.repeat(np.pad((x * 255).astype(np.uint8)[..., 0], ((0, 0), (2, 2), (2, 2)))[..., None], 3, -1)
    big = kdkeras.FitImages(56, 56, 1)(rgb[:2000].astype("float32") / 255).numpy()
    teacher = kdkeras.build_cnn((8, 16), 32, input_shape=(56, 56, 1), seed=0)
    teacher.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    teacher.fit(big, y[:2000], epochs=3, batch_size=64, verbose=0)
    teacher.save(tmp_path / "t56.keras")
    np.savez(tmp_path / "rgb.npz", x=rgb, y=y)
    out = tmp_path / "out"
    assert _run("--teacher", tmp_path / "t56.keras", "--student", "tiny", "--data", tmp_path / "rgb.npz",
                "--epochs", "3", "--out", out) == 0
    assert {"student.keras", "student_scratch.keras", "metrics.json", "report.md", "predictions.png",
            "history.png"} <= set(os.listdir(out))
    metrics = _metrics(out)
    assert metrics["teacher"]["accuracy"] > 0.8 and metrics["student (distilled)"]["accuracy"] > 0.5
    student = keras.models.load_model(out / "student.keras")
    assert student.input_shape == (None, 32, 32, 3)


@pytest.mark.slow
def test_image_folder_and_python_m(teacher_file, sample_arrays, tmp_path):
    (x, y), _ = sample_arrays
    folder = tmp_path / "digits"
    for c in range(10):
        (folder / f"class_{c}").mkdir(parents=True)
        for i in np.flatnonzero(y == c)[:40]:
            png = tf.io.encode_png(tf.cast(tf.round(x[i] * 255), tf.uint8)).numpy()
            (folder / f"class_{c}" / f"{i}.png").write_bytes(png)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "kdkeras", "distill", "--teacher", teacher_file, "--student",
                           "mlp:64", "--data", str(folder), "--epochs", "5", "--verbose", "0", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env=ENV, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "images (28, 28, 1), 10 classes" in proc.stdout and "I0000" not in proc.stderr
    metrics = _metrics(out)
    assert metrics["student (distilled)"]["accuracy"] > 0.4  # 288 training digits; chance is 0.1


def test_tfds_dataset_through_mock_data(teacher_file, tmp_path, monkeypatch, capsys):
    import tensorflow_datasets as tfds

    from kdkeras.data import mnist

    monkeypatch.setattr(mnist, "_can_reach", lambda *a, **k: True)  # mock_data serves the examples
    out = tmp_path / "out"
    with tfds.testing.mock_data(num_examples=200):
        assert _run("--teacher", teacher_file, "--student", "article", "--data", "tfds:mnist", "--epochs", "1",
                    "--out", out) == 0
    # The tfds "train" split trains (about 90/10 with validation) and its "test" split tests: 200 mock examples
    # each. (A loader that split "train" 80/20 instead would report 160 and 40.)
    found = re.search(r"tfds:mnist: (\d+) train, (\d+) validation, (\d+) test, images \(28, 28, 1\), 10 classes",
                      capsys.readouterr().out)
    assert found and int(found[1]) + int(found[2]) == 200 and int(found[3]) == 200, found
    assert (out / "student.keras").exists() and set(_metrics(out)) == {"teacher", "student (distilled)",
                                                                      "student (scratch)"}


@pytest.mark.parametrize("case, fragment", [
    ("classes differ", "classes"),
    ("empty folder", "no class folders"),
    ("unknown tfds", "no dataset"),
    ("images that cannot fit", "expects inputs of shape"),
    ("bad student", "--student"),
])
def test_errors_are_one_line(case, fragment, teacher_file, tmp_path, capsys):
    args = ["--teacher", teacher_file, "--data", "sample", "--epochs", "1", "--out", tmp_path / "o"]
    if case == "classes differ":
        kdkeras.build_student(num_classes=5).save(tmp_path / "s5.keras")
        args += ["--student", tmp_path / "s5.keras"]
    elif case == "empty folder":
        (tmp_path / "empty").mkdir()
        args[3] = tmp_path / "empty"
    elif case == "unknown tfds":
        args[3] = "tfds:no_such_dataset_anywhere"
    elif case == "images that cannot fit":
        flat = keras.Sequential([keras.Input((784,)), keras.layers.Dense(10)])
        flat.save(tmp_path / "flat.keras")
        args[1] = tmp_path / "flat.keras"
    else:
        args += ["--student", "resnet"]
    assert _run(*args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kdkeras distill: error:") and fragment in err[0], err


def test_help_and_unknown_command(capsys):
    assert commands.main(["--help"]) == 0 and "distill" in capsys.readouterr().out
    assert commands.main(["nonsense"]) == 2
    with pytest.raises(SystemExit):
        commands.main(["distill", "--help"])
    assert "--teacher-outputs" in capsys.readouterr().out
