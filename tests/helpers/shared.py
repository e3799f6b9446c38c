"""What the tests share that is not a fixture: NumPy references, loading a script, a compiled distiller, workers.

Import from here (``from helpers.shared import ...``); ``conftest.py`` keeps the fixtures.
"""

import os
import sys
import tempfile

import keras
import numpy as np

import kdkeras

LOGITS_LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_script(relative_path):
    """A script of the repository (``scripts/x.py``, ``notebooks/build_notebook.py``) imported as a module."""
    import importlib.util

    path = os.path.join(ROOT, relative_path)
    if os.path.dirname(path) not in sys.path:  # as when the script runs: its folder first on sys.path
        sys.path.insert(0, os.path.dirname(path))
    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shuffled(arrays, seed=7):
    """The arrays in one seeded random order (the bundled file is sorted by class)."""
    order = np.random.default_rng(seed).permutation(len(arrays[0]))
    return tuple(a[order] for a in arrays)


def make_distiller(teacher, seed=0, **compile_kwargs):
    """A Distiller of a fresh article student, compiled like the keras.io example."""
    student = kdkeras.build_student(seed=seed)
    distiller = kdkeras.Distiller(student=student, teacher=teacher)
    kwargs = dict(
        optimizer=keras.optimizers.Adam(),
        metrics=[keras.metrics.SparseCategoricalAccuracy()],
        student_loss_fn=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        distillation_loss_fn="kl",
        alpha=0.1,
        temperature=3.0,
    )
    kwargs.update(compile_kwargs)
    distiller.compile(**kwargs)
    return distiller


def softmax_np(z, t=1.0):
    z = np.asarray(z, np.float64) / t
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax_np(z, t=1.0):
    z = np.asarray(z, np.float64) / t
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


_PORT_LOCK = os.path.join(tempfile.gettempdir(), "kdkeras-test-ports.lock")


def _free_ports(n):
    """``n`` local ports that no other test run is handing out at the same time.

    A port is free when bound, but another process could take it between our
    release and the worker's bind. Runs serialise on a lock file, and each takes
    ports from a range keyed by its process id, probing each one before use.
    """
    import fcntl
    import socket

    with open(_PORT_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        base = 20000 + (os.getpid() * 7) % 20000
        ports = []
        for port in range(base, base + 2000):
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            ports.append(port)
            if len(ports) == n:
                return ports
    raise RuntimeError("no free local ports")


def run_local_workers(argv_of, env, n=2, timeout=300, cwd=None):
    """Runs ``n`` processes as one MultiWorkerMirroredStrategy cluster on 127.0.0.1.

    ``argv_of(i)`` is worker ``i``'s command line; each gets ``TF_CONFIG`` naming
    free local ports. Bounded in time: a worker still waiting for its peer after
    ``timeout`` seconds is killed. Returns ``[(returncode, stdout, stderr)]``.
    """
    import json
    import subprocess

    workers = [f"127.0.0.1:{port}" for port in _free_ports(n)]
    procs = []
    try:
        for i in range(n):
            tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}
            procs.append(subprocess.Popen(
                argv_of(i), env=dict(env, TF_CONFIG=json.dumps(tf_config)), cwd=cwd,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            ))
        outputs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outputs)]


class NetworkBlocked(RuntimeError):
    """A test tried to open a connection outside the loopback interface."""
