"""scripts/compare_methods.py runs every method end to end (one epoch, one seed, one pair)."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_compare_methods_smoke(tmp_path):
    out = tmp_path / "results.md"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "compare_methods.py"), "--epochs", "1",
         "--teacher-epochs", "1", "--seeds", "0", "--pairs", "tiny", "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", MPLBACKEND="Agg"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    record = json.loads((tmp_path / "results.json").read_text())
    (run,) = record["test_accuracy"]["tiny"]
    teacher, scratch = run["teacher"], run["scratch"]
    assert teacher > 0.5 and scratch > 0.3
    for method in ("scratch", "kd", "dkd", "fitnets", "rkd", "dml", "born-again"):
        # Every row, exactly, rebuilt from the JSON: mean, std (0 for one seed), per seed, gap, beats scratch.
        value = run[method]
        if method == "scratch":
            gap, beats = "0 %", "—"
        else:
            gap = f"{100 * (value - scratch) / (teacher - scratch):+.0f} %" if teacher > scratch else "n/a"
            beats = "yes" if value > scratch else "**no**"
        row = f"| {method} | {value:.4f} ± 0.0000 | {value:.3f} | {gap} | {beats} |"
        assert row in text.splitlines(), (row, text)
    assert f"| teacher | {teacher:.4f} ± 0.0000 | {teacher:.3f} | — | — |" in text.splitlines()
    assert "tiny student" in text and "bundled 5,000-digit MNIST sample" in text
    assert "seeds [0]" in text and "gap closed" in text
