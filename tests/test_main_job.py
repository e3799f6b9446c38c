"""scripts/train_mnist.py end to end on the bundled sample, its bad-argument handling and atomic writes."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import run_local_workers
from matplotlib import image as mpimg

from kdkeras import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "train_mnist.py")
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", MPLBACKEND="Agg")


def run_script(*args, timeout=300):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True,
                          timeout=timeout, env=ENV, cwd=ROOT)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    proc = run_script("--data", "sample", "--teacher-epochs", "1", "--student-epochs", "1",
                      "--verbose", "0", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_writes_every_output(finished_run):
    out, _ = finished_run
    expected = {"teacher.keras", "student.keras", "student_scratch.keras", "metrics.json",
                "report.md", "predictions.png", "history.png"}
    assert expected <= set(os.listdir(out))
    umask = os.umask(0)
    os.umask(umask)
    for name in expected:  # the mode a plain open() gives, not the temporary file's private 0600
        assert os.stat(os.path.join(out, name)).st_mode & 0o777 == 0o666 & ~umask, name
    assert not [f for f in os.listdir(out) if ".tmp-" in f or f.startswith(".write-test")]


def test_models_load_and_predict(finished_run, sample_arrays):
    out, _ = finished_run
    _, (x_test, y_test) = sample_arrays
    for name, params in (("teacher", 225_034), ("student", 87_050), ("student_scratch", 87_050)):
        model = keras.models.load_model(out / f"{name}.keras")
        assert model.count_params() == params
        logits = model.predict(x_test[:200], verbose=0)
        assert logits.shape == (200, 10) and np.all(np.isfinite(logits))
        assert np.mean(logits.argmax(-1) == y_test[:200]) > 0.5  # one epoch already learns


def test_metrics_json_has_every_field(finished_run):
    out, _ = finished_run
    report = json.loads((out / "metrics.json").read_text())
    models = report["models"]
    assert set(models) == {"teacher", "student (distilled)", "student (scratch)"}
    common = {"accuracy", "macro_f1", "parameters", "bytes_on_disk", "latency_ms_per_image"}
    for name, m in models.items():
        assert common <= set(m), name
        assert 0 <= m["accuracy"] <= 1 and 0 <= m["macro_f1"] <= 1
        assert m["bytes_on_disk"] > 10_000 and m["latency_ms_per_image"] > 0
    for name in ("student (distilled)", "student (scratch)"):
        assert {"agreement", "mean_kl_to_teacher"} <= set(models[name])
        assert models[name]["mean_kl_to_teacher"] >= 0
    assert models["teacher"]["bytes_on_disk"] > models["student (distilled)"]["bytes_on_disk"]
    assert "5,000-digit" in report["run"]["data"]


def test_pngs_are_valid_images_of_plausible_size(finished_run):
    out, _ = finished_run
    for name in ("predictions.png", "history.png"):
        with open(out / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        img = mpimg.imread(out / name)
        assert img.shape[0] > 300 and img.shape[1] > 600, (name, img.shape)
        assert img[..., :3].std() > 0.05  # not a blank canvas


def test_prints_the_comparison_table(finished_run):
    out, proc = finished_run
    for header in ("accuracy", "macro F1", "parameters", "size on disk", "latency", "agreement", "KL to teacher"):
        assert header in proc.stdout
    assert "| student (distilled) |" in proc.stdout
    assert (out / "report.md").read_text().count("| student") == 2


def test_help_documents_every_flag_with_default():
    proc = run_script("--help", timeout=60)
    assert proc.returncode == 0
    for flag in ("--data", "--teacher-epochs", "--student-epochs", "--batch-size", "--temperature",
                 "--alpha", "--loss", "--seed", "--out", "--teacher"):
        assert flag in proc.stdout
    assert proc.stdout.count("(default:") >= 10


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--loss", "kullback"], "kullback"),
        (["--temperature", "0"], "temperature"),
        (["--temperature", "-2"], "-2"),
        (["--alpha", "1.5"], "1.5"),
        (["--data", "/no/such/mnist.npz"], "/no/such/mnist.npz"),
        (["--teacher", "/no/such/teacher.keras"], "/no/such/teacher.keras"),
        (["--batch-size", "0"], "batch-size"),
        (["--seed", "abc"], "abc"),
        (["--strategy", "tpu"], "tpu"),
        (["--strategy", "multiworker"], "TF_CONFIG"),
    ],
)
def test_bad_arguments_exit_non_zero_with_one_line(args, fragment, tmp_path):
    proc = run_script(*args, "--out", str(tmp_path / "out"), timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "error:" in lines[0] and fragment in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout


def test_unwritable_output_directory(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    proc = run_script("--out", str(blocker / "sub"), timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "--out" in lines[0] and "writable" in lines[0]


def test_corrupt_data_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage")
    proc = run_script("--data", str(bad), "--out", str(tmp_path / "o"), timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "bad.npz" in lines[0]


def test_interrupted_save_leaves_previous_files_intact(tmp_path):
    target = tmp_path / "metrics.json"
    cli.write_text(target, '{"complete": true}\n')

    class Boom(Exception):
        pass

    class HalfWrittenModel:
        def save(self, path):
            with open(path, "w") as f:
                f.write("partial")
            raise Boom()

    model_path = tmp_path / "student.keras"
    model_path.write_text("previous model")
    with pytest.raises(Boom):
        cli.save_model(HalfWrittenModel(), str(model_path))
    assert model_path.read_text() == "previous model"

    real_fsync = os.fsync

    def interrupted_fsync(fd):
        raise KeyboardInterrupt

    os.fsync = interrupted_fsync
    try:
        with pytest.raises(KeyboardInterrupt):
            cli.write_text(target, '{"truncated": ')
    finally:
        os.fsync = real_fsync
    assert json.loads(target.read_text()) == {"complete": True}
    assert sorted(os.listdir(tmp_path)) == ["metrics.json", "student.keras"]


def _accuracies(out):
    with open(os.path.join(out, "metrics.json")) as f:
        return {k: v["accuracy"] for k, v in json.load(f)["models"].items()}


@pytest.fixture(scope="module")
def mirrored_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("mirrored")
    proc = run_script("--data", "sample", "--teacher-epochs", "1", "--student-epochs", "1",
                      "--strategy", "mirrored", "--verbose", "0", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_mirrored_strategy_runs(mirrored_run):
    accuracies = _accuracies(mirrored_run)
    assert accuracies["student (distilled)"] > 0.5 and accuracies["teacher"] > 0.5


def test_multiworker_strategy_two_workers_on_localhost(mirrored_run, tmp_path):
    """--strategy multiworker: two processes (TF_CONFIG on 127.0.0.1) train as one."""
    out = tmp_path / "mw"
    results = run_local_workers(
        lambda i: [sys.executable, SCRIPT, "--data", "sample", "--teacher-epochs", "1", "--student-epochs", "1",
                   "--strategy", "multiworker", "--verbose", "0", "--out", str(out)],
        ENV, cwd=ROOT,
    )
    for returncode, _, err in results:
        assert returncode == 0, err[-3000:]
    chief, worker = (stdout for _, stdout, _ in results)
    assert "2 replicas" in chief and "chief wrote the outputs" in worker
    assert {"teacher.keras", "student.keras", "metrics.json", "predictions.png"} <= set(os.listdir(out))

    def accuracy_rows(stdout):
        return [line.split("|")[1:3] for line in stdout.splitlines() if line.startswith("| ") and "0." in line]

    assert accuracy_rows(chief) == accuracy_rows(worker)  # both workers hold the same models
    # The same global batches as a one-process MirroredStrategy run: the same models, to rounding.
    single, multi = _accuracies(mirrored_run), _accuracies(out)
    for name in single:
        assert abs(single[name] - multi[name]) <= 0.005, (single, multi)
