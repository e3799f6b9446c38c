"""Where a measurement came from: the command, date, machine and library versions.

Every result file the project's scripts write carries :func:`provenance`, so a
number in the docs can be traced to how, when and where it was measured.
"""

import datetime
import json
import logging
import os
import platform
import shlex
import sys
import time

__all__ = ["Stopwatch", "cpu", "machine", "provenance", "write_result"]


def machine():
    """One line describing this machine: CPU cores and architecture, GPUs if TensorFlow sees any."""
    gpus = []
    if "tensorflow" in sys.modules:
        gpus = [d.name for d in sys.modules["tensorflow"].config.list_physical_devices("GPU")]
    cpu = platform.processor() or platform.machine()
    return f"{os.cpu_count()} CPU cores ({cpu}), " + (f"{len(gpus)} GPU(s)" if gpus else "no GPU")


#: The instruction sets that change which TensorFlow (oneDNN) kernels run, and so times and the last digits.
INSTRUCTION_SETS = ("avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
                    "amx_bf16", "amx_int8", "avx_vnni")


def cpu():
    """``{"model": ..., "instruction_sets": [...]}`` of this machine's CPU (Linux ``/proc/cpuinfo``; else the platform's).

    A seed repeats a run exactly on one machine; on another CPU model TensorFlow
    may pick other kernels, which changes times and the last digits of results.
    """
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                if model and flags:
                    break
    except OSError:
        pass
    return {"model": model, "instruction_sets": [f for f in INSTRUCTION_SETS if f in flags]}


def provenance(argv=None, data=None):
    """A result file's header: ``command``, ``date``, ``machine``, ``cpu``, ``python``, ``tensorflow``, ``keras``[, ``data``]."""
    argv = sys.argv if argv is None else argv
    versions = {}
    for name in ("tensorflow", "keras"):
        module = sys.modules.get(name)
        versions[name] = getattr(module, "__version__", None) if module else None
    record = {"command": "python " + shlex.join(argv),
              "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "machine": machine(), "cpu": cpu(), "python": platform.python_version(), **versions}
    if data is not None:
        record["data"] = data
    return record


def write_result(path, record):
    """Writes a script's ``record`` to ``path`` as JSON (atomically) under a :func:`provenance` header; returns it.

    ``path`` ``None`` writes nothing (the script was run without ``--json``).
    """
    from kdkeras.atomic import write_text

    record = {**provenance(), **record}
    if path:
        write_text(path, json.dumps(record, indent=2, default=float) + "\n")
        logging.getLogger(__name__).info("wrote %s", path)
    return record


class Stopwatch:
    """Minutes since it was made; ``stamp(message)`` prefixes a message with them, for a long script's log."""

    def __init__(self):
        self.start = time.perf_counter()

    def minutes(self):
        return (time.perf_counter() - self.start) / 60

    def stamp(self, message):
        return f"[{self.minutes():5.1f} min] {message}"
