"""scripts/train_mnist.py end to end on the bundled sample, its bad-argument handling and atomic writes."""

import json
import os
import re
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest

import kdkeras
from kdkeras import cli
from helpers.shared import run_local_workers
from matplotlib import image as mpimg

from kdkeras import atomic

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
                      "--verbose", "0", "--export", "--tensorboard", str(out / "tb"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def _scalars(directory):
    """{tag: [values]} read back from the TensorBoard event files under ``directory``."""
    import tensorflow as tf

    values = {}
    for path in tf.io.gfile.glob(os.path.join(str(directory), "events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                values.setdefault(value.tag, []).append(float(tf.make_ndarray(value.tensor)))
    return values


def test_tensorboard_logs_every_stage(finished_run):
    out, _ = finished_run
    recipe = kdkeras.Recipe()
    metrics = json.loads((out / "metrics.json").read_text())
    for stage in ("teacher", "scratch"):
        train = _scalars(out / "tb" / stage / "train")
        assert {"epoch_loss", "epoch_accuracy"} <= set(train), train.keys()
        assert "epoch_loss" in _scalars(out / "tb" / stage / "validation")
    distilled = _scalars(out / "tb" / "distilled" / "train")
    assert {"epoch_loss", "epoch_agreement", "epoch_distillation_loss", "epoch_student_loss"} <= set(distilled)
    assert distilled["epoch_temperature"] == [recipe.temperature] and distilled["epoch_alpha"] == [recipe.alpha]
    validation = _scalars(out / "tb" / "distilled" / "validation")
    # The logged validation agreement is the one the report gives (the test split is the validation data).
    assert validation["epoch_agreement"][-1] == pytest.approx(metrics["models"]["student (distilled)"]["agreement"],
                                                              abs=1e-3)


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
    seconds = report["run"]["seconds"]  # the wall clock of each stage, inside the training's
    assert set(seconds) == {"teacher", "scratch", "distilled", "training"}
    assert all(seconds[k] > 0 for k in seconds)
    assert seconds["teacher"] + seconds["scratch"] + seconds["distilled"] <= seconds["training"] + 0.2
    assert "seconds" not in report["run"]["args"]


def test_export_flag_writes_and_measures_the_student(finished_run):
    out, _ = finished_run
    exported = json.loads((out / "metrics.json").read_text())["export"]
    assert sorted(os.listdir(out / "export")) == ["saved_model", "student_float32.tflite", "student_int8.tflite"]
    f32, i8 = exported["tflite_float32"], exported["tflite_int8"]
    assert f32["max_abs_logit_diff_vs_keras"] <= 1e-4
    assert f32["accuracy"] == pytest.approx(f32["accuracy_keras"], abs=0.002)
    assert i8["bytes"] < 0.4 * f32["bytes"] and exported["saved_model"]["bytes"] > 0
    assert f32["latency_ms_per_image"] > 0 and i8["latency_ms_per_image"] > 0
    assert "## Exported student" in (out / "report.md").read_text()


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
    flags = [a.option_strings[-1] for a in cli.build_parser()._actions if a.option_strings and a.dest != "help"]
    assert len(flags) == 25
    for flag in flags:
        assert flag in proc.stdout, flag
    # Every flag's help shows its default, and the defaults are the Recipe's.
    blocks, current = {}, None
    for line in proc.stdout.split("options:", 1)[1].splitlines():
        if line.startswith("  -"):
            current = line.split()[0].rstrip(",")
            blocks[current] = ""
        if current:
            blocks[current] = " ".join((blocks[current] + " " + line).split())
    for flag in flags:
        assert "(default:" in blocks[flag], flag
    recipe = kdkeras.Recipe()
    for flag, value in (("--temperature", recipe.temperature), ("--alpha", recipe.alpha),
                        ("--teacher-epochs", recipe.teacher_epochs), ("--shift", recipe.shift),
                        ("--student-steps", recipe.student_steps),
                        ("--steps-per-execution", recipe.steps_per_execution)):
        assert blocks[flag].endswith(f"(default: {value})"), blocks[flag]


def test_help_answers_without_importing_tensorflow(tmp_path):
    code = ("import sys; from kdkeras import cli\n"
            "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('TF', 'tensorflow' in sys.modules)")
    for argv0 in ("kdkeras-train-mnist", "train_mnist.py"):
        proc = subprocess.run([sys.executable, "-c", f"import sys; sys.argv[0] = {argv0!r}\n" + code],
                              capture_output=True, text=True, timeout=120, env=ENV, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert "usage: train_mnist" in proc.stdout and proc.stdout.strip().endswith("TF False"), proc.stdout


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
        (["--shift", "0.9"], "--shift"),
        (["--rotation", "-5"], "--rotation"),
        (["--mixup", "nan"], "--mixup"),
        (["--mixup", "0.2", "--loss", "dkd"], "mixup"),
        (["--lr-schedule", "step"], "step"),
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
    atomic.write_text(target, '{"complete": true}\n')

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
        atomic.save_model(HalfWrittenModel(), str(model_path))
    assert model_path.read_text() == "previous model"

    real_fsync = os.fsync

    def interrupted_fsync(fd):
        raise KeyboardInterrupt

    os.fsync = interrupted_fsync
    try:
        with pytest.raises(KeyboardInterrupt):
            atomic.write_text(target, '{"truncated": ')
    finally:
        os.fsync = real_fsync
    assert json.loads(target.read_text()) == {"complete": True}
    assert sorted(os.listdir(tmp_path)) == ["metrics.json", "student.keras"]


def _accuracies(out):
    with open(os.path.join(out, "metrics.json")) as f:
        return {k: v["accuracy"] for k, v in json.load(f)["models"].items()}


TWO_CPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "helpers", "two_cpus.py")
ONE_EPOCH = ("--data", "sample", "--teacher-epochs", "1", "--student-epochs", "1", "--verbose", "0")


@pytest.fixture(scope="module")
def mirrored_run(tmp_path_factory):
    """The main job with --strategy mirrored on two logical CPU devices: two replicas."""
    out = tmp_path_factory.mktemp("mirrored")
    proc = subprocess.run([sys.executable, TWO_CPUS, *ONE_EPOCH, "--strategy", "mirrored", "--out", str(out)],
                          capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MirroredStrategy, 2 replicas, global batch 64" in proc.stdout, proc.stdout
    return out


@pytest.mark.slow
def test_mirrored_strategy_on_two_replicas_trains_like_one_device(mirrored_run, finished_run):
    # Two replicas share each global batch of 64 and all-reduce: the same models as one device, to rounding.
    mirrored, single = _accuracies(mirrored_run), _accuracies(finished_run[0])
    assert mirrored["teacher"] > 0.9
    for name in single:
        assert abs(single[name] - mirrored[name]) <= 0.005, (single, mirrored)


@pytest.mark.slow
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


# --------------------------------------------------------------------------- #
# Faults: a killed run resumes; a diverging run stops clearly; bad model files
# --------------------------------------------------------------------------- #
KILLED_HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "helpers", "killed_main_job.py")
RESUME_ARGS = ("--data", "sample", "--teacher-epochs", "1", "--student-epochs", "3", "--seed", "4",
               "--deterministic", "--verbose", "0")


def _comparable(out):
    with open(os.path.join(out, "metrics.json")) as f:
        models = json.load(f)["models"]
    return {name: {k: v for k, v in m.items() if "latency" not in k} for name, m in models.items()}


@pytest.mark.slow
def test_sigkilled_run_resumes_to_the_same_metrics(tmp_path, reliability):
    """SIGKILL during the distilled student's training, then --resume: identical metrics."""
    reference = run_script(*RESUME_ARGS, "--out", str(tmp_path / "ref"))
    assert reference.returncode == 0, reference.stderr[-3000:]

    out = tmp_path / "killed"
    latest = out / ".kdkeras-state" / "distilled" / "latest.json"
    killed = subprocess.run([sys.executable, KILLED_HELPER, "2", *RESUME_ARGS, "--out", str(out)],
                            capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    killed_at = json.loads(latest.read_text())["epoch"]
    assert killed_at == 2 and not (out / "student.keras").exists()
    assert (out / "teacher.keras").exists() and (out / "student_scratch.keras").exists()

    resumed = run_script(*RESUME_ARGS, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Teacher: finished earlier" in resumed.stdout
    assert "resuming at epoch 3 of 3" in resumed.stdout
    assert _comparable(out) == _comparable(tmp_path / "ref")
    history = json.loads((out / ".kdkeras-state" / "distilled.done.json").read_text())
    assert len(history["loss"]) == 3  # the epochs before the kill are kept in history.png
    assert not (out / ".kdkeras-state" / "distilled").exists()
    reliability("fault survived",
                f"main job SIGKILLed after epoch {killed_at} of the distilled student, then --resume: "
                "metrics identical to an uninterrupted run")


def test_diverging_run_names_epoch_and_step_and_keeps_earlier_files(tmp_path, reliability):
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text('{"from": "an earlier run"}')
    proc = run_script("--data", "sample", "--teacher-epochs", "2", "--student-epochs", "1",
                      "--learning-rate", "1e12", "--verbose", "0", "--out", str(out))
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert re.search(r"teacher: Training stopped: loss became (nan|inf) at epoch 1, step \d+", lines[0])
    assert (out / "metrics.json").read_text() == '{"from": "an earlier run"}'
    assert not (out / "teacher.keras").exists()
    reliability("fault survived", "learning rate 1e12 in the main job: exit 1 naming the epoch and step; "
                                  "earlier files untouched")


def _lambda_model(path):
    inputs = keras.Input((28, 28, 1))
    outputs = keras.layers.Dense(10)(keras.layers.Lambda(lambda t: t * 2.0)(keras.layers.Flatten()(inputs)))
    keras.Model(inputs, outputs).save(path)


@pytest.mark.parametrize("kind", ["truncated", "random bytes", "a zip that is not a model", "Lambda layer"])
def test_bad_teacher_files_are_refused_in_one_line(kind, finished_run, tmp_path, reliability):
    out, _ = finished_run
    bad = tmp_path / "teacher.keras"
    good = (out / "teacher.keras").read_bytes()
    if kind == "truncated":
        bad.write_bytes(good[: len(good) // 2])
    elif kind == "random bytes":
        bad.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "a zip that is not a model":
        import zipfile

        with zipfile.ZipFile(bad, "w") as z:
            z.writestr("config.json", "{not json")
    else:
        _lambda_model(str(bad))
    proc = run_script("--data", "sample", "--teacher", str(bad), "--student-epochs", "1",
                      "--out", str(tmp_path / "o"), timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "could not load --teacher" in lines[0] and "Traceback" not in proc.stderr
    if kind == "Lambda layer":
        assert "safe_mode" in lines[0]  # Keras refuses to run the file's code
    reliability("bad input refused", f"--teacher file: {kind}")


@pytest.mark.parametrize(
    "args, fragment",
    [(["--resume"], "--resume"), (["--learning-rate", "-1"], "learning-rate"),
     (["--resume", "--out", "x", "--strategy", "multiworker"], "multiworker")],
)
def test_bad_resume_and_rate_arguments(args, fragment, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    proc = subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=120,
                          env=dict(ENV, TF_CONFIG='{"cluster": {}, "task": {}}'))
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0]


def test_tf_config_that_is_not_an_object_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, SCRIPT, "--strategy", "multiworker", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, env=dict(ENV, TF_CONFIG="[1, 2]"))
    assert proc.returncode == 2 and "TF_CONFIG" in proc.stderr and "Traceback" not in proc.stderr


def test_default_recipe_runs_the_teacher_online_on_augmented_views(finished_run):
    out, proc = finished_run
    assert "the teacher runs online on the same views" in proc.stdout
    args = json.loads((out / "metrics.json").read_text())["run"]["args"]
    assert args["shift"] > 0 and args["rotation"] > 0 and args["lr_schedule"] == "cosine"
    assert "augmentation (training batches)" in (out / "report.md").read_text()


@pytest.mark.slow
def test_mixup_run_uses_soft_labels_and_plain_run_caches(tmp_path):
    proc = run_script("--data", "sample", "--teacher-epochs", "1", "--student-epochs", "1", "--mixup", "0.3",
                      "--shift", "0", "--rotation", "0", "--verbose", "0", "--out", str(tmp_path / "mix"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mixup 0.3" in proc.stdout and "the teacher runs online" in proc.stdout
    models = json.loads((tmp_path / "mix" / "metrics.json").read_text())["models"]
    assert models["student (distilled)"]["accuracy"] > 0.3  # one epoch on blended images still learns
    proc = run_script("--data", "sample", "--teacher-epochs", "1", "--student-epochs", "1", "--shift", "0",
                      "--rotation", "0", "--lr-schedule", "constant", "--verbose", "0",
                      "--out", str(tmp_path / "plain"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "teacher logits cached once" in proc.stdout


def _models(out):
    return json.loads((out / "metrics.json").read_text())["models"]


@pytest.mark.slow
def test_a_loaded_teacher_is_the_one_distilled_and_no_cache_runs_it_online(finished_run, sample_arrays, tmp_path):
    trained = finished_run[0] / "teacher.keras"
    untrained = tmp_path / "untrained.keras"
    kdkeras.build_teacher(seed=9).save(untrained)
    _, (x_test, y_test) = sample_arrays
    plain = ("--data", "sample", "--student-epochs", "1", "--shift", "0", "--rotation", "0", "--alpha", "0",
             "--verbose", "0")
    runs = {}
    for name, teacher, extra in (("cached", trained, ()), ("online", trained, ("--no-cache",)),
                                 ("untrained", untrained, ())):
        proc = run_script(*plain, "--teacher", str(teacher), *extra, "--out", str(tmp_path / name))
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert f"Teacher: loaded from {teacher}" in proc.stdout
        assert ("(online teacher)" if extra else "(teacher logits cached once)") in proc.stdout
        runs[name] = _models(tmp_path / name)
        # The teacher in the report is the file's model, measured independently here.
        expected = np.mean(keras.models.load_model(teacher).predict(x_test, verbose=0).argmax(-1) == y_test)
        assert runs[name]["teacher"]["accuracy"] == pytest.approx(expected, abs=1e-9)
    # Online and cached logits are the same numbers: the same distilled student, to rounding.
    for key in ("accuracy", "agreement"):
        assert abs(runs["cached"]["student (distilled)"][key] - runs["online"]["student (distilled)"][key]) <= 0.003
    # Distilled (alpha = 0) from an untrained teacher, the student learns that teacher, not the digits.
    assert runs["untrained"]["teacher"]["accuracy"] < 0.3
    assert runs["untrained"]["student (distilled)"]["accuracy"] < 0.4 < runs["cached"]["student (distilled)"]["accuracy"]
    assert runs["untrained"]["student (scratch)"]["accuracy"] == runs["cached"]["student (scratch)"]["accuracy"]
    # Several --teacher files are distilled as their ensemble: the mean of their logits.
    proc = run_script(*plain, "--teacher", str(trained), str(untrained), "--out", str(tmp_path / "ensemble"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "an ensemble of 2: the mean of their logits" in proc.stdout
    mean_logits = sum(keras.models.load_model(t).predict(x_test, verbose=0) for t in (trained, untrained)) / 2
    assert _models(tmp_path / "ensemble")["teacher"]["accuracy"] == pytest.approx(
        np.mean(mean_logits.argmax(-1) == y_test), abs=1e-9)


def test_console_script_behaves_like_the_script(tmp_path):
    """The installed kdkeras-train-mnist: same help, same one-line errors, TensorFlow's start-up lines hidden."""
    import shutil

    console = shutil.which("kdkeras-train-mnist", path=os.path.dirname(sys.executable))
    assert console, "the console script is not installed beside this Python"
    for argv in (["--help"], ["--alpha", "1.5", "--out", str(tmp_path / "o")]):
        ours = subprocess.run([console, *argv], capture_output=True, text=True, timeout=120, env=ENV, cwd=tmp_path)
        script = run_script(*argv, timeout=120)
        assert (ours.returncode, ours.stdout, ours.stderr) == (script.returncode, script.stdout, script.stderr)
    assert ours.returncode == 2 and len(ours.stderr.strip().splitlines()) == 1 and "1.5" in ours.stderr


def test_recipe_probe_and_main_job_train_the_same_student(finished_run, tmp_path):
    """Both train through kdkeras.experiment: the same seed and teacher give identical weights."""
    out, _ = finished_run
    probe = tmp_path / "probe.keras"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "recipe_probe.py"), "--teacher",
                           str(out / "teacher.keras"), "--epochs", "1", "--seed", "0", "--out", str(probe)],
                          capture_output=True, text=True, timeout=600, env=ENV, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours, theirs = keras.models.load_model(probe), keras.models.load_model(out / "student.keras")
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_array_equal(a, b)
    fresh = kdkeras.build_student(seed=0).get_weights()
    assert max(np.abs(a - b).max() for a, b in zip(fresh, ours.get_weights())) > 1e-3  # it trained


def test_tensorboard_without_the_package_is_one_line(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(cli.UserError, match="pip install tensorboard"):
        cli._check_args(cli.build_parser().parse_args(["--tensorboard", str(tmp_path), "--out", str(tmp_path / "o")]))
