"""Runs the main job and SIGKILLs itself when the distilled student's epoch N (0-based) begins.

    python tests/helpers/killed_main_job.py N [main job flags...]

By then epochs 0 .. N-1 have ended and been backed up, so the kill always
falls at the same point: a crash test with no timing in it.
"""

import os
import signal
import sys

import keras

from kdkeras import cli, experiment


class KillAtEpoch(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGKILL)


def main():
    epoch, argv = int(sys.argv[1]), sys.argv[2:]
    distil = experiment.distil

    def distil_then_die(*args, callbacks=(), **kwargs):
        return distil(*args, callbacks=(*callbacks, KillAtEpoch(epoch)), **kwargs)

    experiment.distil = distil_then_die
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
