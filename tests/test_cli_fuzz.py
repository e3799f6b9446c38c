"""Fuzzing the command line: every user mistake on every command exits 2 with one line and leaves no run folder.

Random combinations of broken files (missing, empty, not the format, NaN
pixels, wrong shapes and dtypes, labels out of range, an undecodable image in a
class folder), odd paths (an output path that is a file) and bad flag values are
given to ``kdkeras train-mnist | train-text | distill | tune``, in process (the
errors come before any training): every broken input once on every command,
then random combinations of inputs, bad flags and output paths
(``KDKERAS_FUZZ_EXAMPLES`` per command; the slow test runs more).
"""

import io
import os
import contextlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdkeras.cli import dispatch

FAST, SLOW = 8, 40


def _npz(folder, kind):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (40, 28, 28)).astype("uint8")
    y = rng.permutation(np.arange(40) % 10).astype("uint8")
    path = os.path.join(folder, f"{kind}.npz")
    if kind == "nan pixels":
        xf = x.astype("float32") / 255
        xf[3, 4, 5] = np.nan
        np.savez(path, x=xf, y=y)
    elif kind == "labels out of range":
        np.savez(path, x=x, y=(y + 250).astype("uint8"))
    elif kind == "float labels":
        np.savez(path, x=x, y=y.astype("float32") + 0.5)
    elif kind == "wrong shape":
        np.savez(path, x=x.reshape(40, -1)[:, :10], y=y)
    elif kind == "string images":
        np.savez(path, x=np.array(["a"] * 40), y=y)
    elif kind == "mismatched lengths":
        np.savez(path, x=x, y=y[:30])
    elif kind == "no arrays":
        np.savez(path, z=x)
    elif kind == "not an npz":
        with open(path, "wb") as f:
            f.write(b"PK\x03\x04 this is no archive")
    elif kind == "empty file":
        open(path, "wb").close()
    return path


def _image_folder(folder, kind):
    root = os.path.join(folder, f"images-{kind.replace(' ', '-')}")
    for c in ("cats", "dogs"):
        os.makedirs(os.path.join(root, c), exist_ok=True)
    if kind == "broken png":
        import PIL.Image  # matplotlib brings Pillow

        for c in ("cats", "dogs"):
            for i in range(3):
                PIL.Image.fromarray(np.full((8, 8), 40 * i, "uint8")).save(os.path.join(root, c, f"{i}.png"))
        with open(os.path.join(root, "dogs", "broken.png"), "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n not really")
        with open(os.path.join(root, "cats", "notes.txt"), "w") as f:
            f.write("not an image")
    elif kind == "no images":
        with open(os.path.join(root, "cats", "notes.txt"), "w") as f:
            f.write("not an image")
    return root


def _text(folder, kind):
    path = os.path.join(folder, f"text-{kind.replace(' ', '-')}.txt")
    if kind == "not utf-8":
        with open(path, "wb") as f:
            f.write(b"\xff\xfe\x00broken " * 400)
    elif kind == "empty":
        open(path, "w").close()
    elif kind == "too short":
        with open(path, "w", encoding="utf-8") as f:
            f.write("To be or not to be.\n" * 10)
    elif kind == "folder without txt":
        path = os.path.join(folder, "no-txt")
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "a.md"), "w") as f:
            f.write("# not txt")
    return path


IMAGE_DATA = st.one_of(
    st.sampled_from(["nan pixels", "labels out of range", "float labels", "wrong shape", "string images",
                     "mismatched lengths", "no arrays", "not an npz", "empty file"]).map(lambda k: ("npz", k)),
    st.sampled_from(["broken png", "no images"]).map(lambda k: ("folder", k)),
    st.sampled_from(["/no/such/data.npz", "tfds:no_such_dataset_xyz"]).map(lambda k: ("path", k)),
)
TEXT_DATA = st.sampled_from(["not utf-8", "empty", "too short", "folder without txt", "missing"])
BAD_FLAGS = {
    "train-mnist": st.sampled_from([["--alpha", "1.5"], ["--temperature", "0"], ["--batch-size", "0"],
                                    ["--loss", "kullback"], ["--temperature", "nan"], ["--student-steps", "-3"]]),
    "train-text": st.sampled_from([["--alpha", "-0.1"], ["--temperature", "-1"], ["--context", "0"],
                                   ["--loss", "no_such_loss"], ["--transfer-fraction", "2"], ["--top-k", "-1"]]),
    "distill": st.sampled_from([["--alpha", "2"], ["--temperature", "0"], ["--student", "mlp:ten"],
                                ["--student", "no_such_builder"], ["--loss", "kullback"], ["--epochs", "0"]]),
    "tune": st.sampled_from([["--validation-size", "1.5"], ["--alphas", "3"], ["--temperatures", "-1"],
                             ["--student", "mlp:0"], ["--max-trials", "0"]]),
}


def _run(argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = dispatch.main(argv)
        except SystemExit as e:
            code = e.code
    return code, err.getvalue()


def _check(argv, out):
    code, err = _run(argv)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2, (argv, code, err[-2000:])
    assert len(lines) == 1 and "Traceback" not in err, (argv, err[-2000:])
    assert not os.path.exists(out), (argv, "a run folder was left behind")


def _case(command, tmp, data, flag, out_kind, teacher):
    out = os.path.join(tmp, "out")
    if out_kind == "a file":
        out = os.path.join(tmp, "an-existing-file")
        open(out, "w").close()
    argv = [command, "--out", out]
    if command == "train-text":
        argv += ["--data", os.path.join(tmp, "missing.txt") if data == "missing" else _text(tmp, data)]
    else:
        source, kind = data
        path = kind if source == "path" else _npz(tmp, kind) if source == "npz" else _image_folder(tmp, kind)
        argv += ["--data", path]
        if command in ("distill", "tune"):
            argv += ["--teacher", teacher, "--epochs", "1"]
    argv += flag or []
    if out_kind == "a file":
        code, err = _run(argv)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (argv, err[-2000:])
        assert os.path.isfile(out)
    else:
        _check(argv, out)


IMAGE_KINDS = [("npz", k) for k in ("nan pixels", "labels out of range", "float labels", "wrong shape", "string images",
                                    "mismatched lengths", "no arrays", "not an npz", "empty file")] + \
    [("folder", "broken png"), ("folder", "no images"), ("path", "/no/such/data.npz"),
     ("path", "tfds:no_such_dataset_xyz")]
TEXT_KINDS = ["not utf-8", "empty", "too short", "folder without txt", "missing"]


@pytest.mark.parametrize("command, data", [(c, d) for c in ("train-mnist", "distill", "tune") for d in IMAGE_KINDS]
                         + [("train-text", d) for d in TEXT_KINDS])
def test_each_broken_input_is_refused_in_one_line(command, data, teacher_file, tmp_path, reliability):
    _case(command, str(tmp_path), data, None, "new", teacher_file)
    what = data if isinstance(data, str) else f"{data[0]}: {data[1]}"
    reliability("bad input refused", f"kdkeras {command} --data ({what}): exit 2, one line, no run folder")


def _examples():
    return int(os.environ.get("KDKERAS_FUZZ_EXAMPLES", FAST))


@pytest.mark.parametrize("command", ["train-mnist", "train-text", "distill", "tune"])
def test_every_command_refuses_broken_inputs_in_one_line(command, teacher_file, tmp_path_factory, reliability):
    data = TEXT_DATA if command == "train-text" else IMAGE_DATA
    tried = []

    @settings(max_examples=_examples(), deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=data, flag=st.one_of(st.none(), BAD_FLAGS[command]), out_kind=st.sampled_from(["new", "a file"]))
    def case(data, flag, out_kind):
        tried.append(1)
        _case(command, str(tmp_path_factory.mktemp("fuzz")), data, flag, out_kind, teacher_file)

    case()
    reliability("bad input refused", f"kdkeras {command}: random broken data, bad flags and an --out that is a "
                "file (hypothesis): exit 2, one line, no traceback, no run folder", cases=len(tried))


@pytest.mark.slow
@pytest.mark.parametrize("command", ["train-mnist", "train-text", "distill", "tune"])
def test_every_command_refuses_broken_inputs_longer_profile(command, teacher_file, tmp_path_factory, monkeypatch,
                                                            reliability):
    monkeypatch.setenv("KDKERAS_FUZZ_EXAMPLES", str(SLOW))
    test_every_command_refuses_broken_inputs_in_one_line(command, teacher_file, tmp_path_factory, reliability)


@pytest.mark.parametrize("command", ["train-mnist", "train-text", "distill", "tune"])
def test_an_out_path_that_is_a_file_is_refused_in_one_line(command, teacher_file, tmp_path, reliability):
    argv_data = ["--data", "sample"] + (["--teacher", teacher_file] if command in ("distill", "tune") else [])
    out = tmp_path / "a-file"
    out.write_text("keep me")
    code, err = _run([command, "--out", str(out), *argv_data])
    assert code == 2 and "is a file" in err and len(err.strip().splitlines()) == 1, err
    assert out.read_text() == "keep me"
    reliability("bad input refused", f"kdkeras {command} --out naming an existing file: exit 2, one line, file kept")


def test_a_diverging_distill_run_says_how_to_resume(teacher_file, tmp_path, reliability):
    out = tmp_path / "run"
    code, err = _run(["distill", "--teacher", teacher_file, "--data", "sample", "--epochs", "1",
                      "--learning-rate", "1e12", "--verbose", "0", "--out", str(out)])
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert "became" in lines[0] and f"--resume --out {out}" in lines[0]
    assert out.is_dir()  # the run folder and its resume state stay
    reliability("fault survived", "kdkeras distill at learning rate 1e12: exit 1, one line naming --resume, "
                "run folder kept")
