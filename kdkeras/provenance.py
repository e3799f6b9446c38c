"""Where a measurement came from: the command, date, machine and library versions.

Every result file the project's scripts write carries :func:`provenance`, so a
number in the docs can be traced to how, when and where it was measured.
"""

import datetime
import os
import platform
import shlex
import sys

__all__ = ["machine", "provenance"]


def machine():
    """One line describing this machine: CPU cores and architecture, GPUs if TensorFlow sees any."""
    gpus = []
    if "tensorflow" in sys.modules:
        gpus = [d.name for d in sys.modules["tensorflow"].config.list_physical_devices("GPU")]
    cpu = platform.processor() or platform.machine()
    return f"{os.cpu_count()} CPU cores ({cpu}), " + (f"{len(gpus)} GPU(s)" if gpus else "no GPU")


def provenance(argv=None, data=None):
    """A result file's header: ``command``, ``date``, ``machine``, ``python``, ``tensorflow``, ``keras``[, ``data``]."""
    argv = sys.argv if argv is None else argv
    versions = {}
    for name in ("tensorflow", "keras"):
        module = sys.modules.get(name)
        versions[name] = getattr(module, "__version__", None) if module else None
    record = {"command": "python " + shlex.join(argv),
              "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "machine": machine(), "python": platform.python_version(), **versions}
    if data is not None:
        record["data"] = data
    return record
