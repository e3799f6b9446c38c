"""tf.distribute: one step on N replicas updates the weights as one device does."""

import json
import os
import subprocess
import sys

import pytest

HELPER = os.path.join(os.path.dirname(__file__), "helpers", "mirrored_step.py")


@pytest.fixture(scope="module")
def gaps():
    proc = subprocess.run([sys.executable, HELPER], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_two_replica_mirrored_step_matches_one_device(gaps):
    assert gaps["kdkeras"]["max_weight_gap"] < 1e-5, gaps
    assert gaps["kdkeras"]["loss_gap"] < 1e-5, gaps


def test_naive_per_replica_mean_would_not_match(gaps):
    # the same check fails for the naive scaling, so the test above can fail
    assert gaps["naive"]["single_device_gap"] < 1e-6  # identical on one device ...
    assert gaps["naive"]["max_weight_gap"] > 1e-3, gaps  # ... but 2x the gradient on two replicas
