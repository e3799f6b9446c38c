"""scripts/compare_methods.py runs every method end to end (one epoch, one seed, one pair)."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
    for method in ("scratch", "kd", "dkd", "fitnets", "rkd", "dml", "born-again"):
        assert f"| {method} | 0." in text, method
    assert "tiny student" in text and "bundled 5,000-digit MNIST sample" in text
    assert "seeds [0]" in text and "gap closed" in text
