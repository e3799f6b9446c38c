"""Runs the main job, or a ``kdkeras`` command, with the CPU split into two logical devices: ``--strategy
mirrored`` gets two replicas.

    python tests/helpers/two_cpus.py [main job flags...]
    python tests/helpers/two_cpus.py distill-lm [flags...]
"""

import sys

import tensorflow as tf

from kdkeras import cli

if __name__ == "__main__":
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    if len(sys.argv) > 1 and not sys.argv[1].startswith("-"):  # a kdkeras command
        from kdkeras.cli.dispatch import main

        sys.exit(main(sys.argv[1:]))
    sys.exit(cli.main(sys.argv[1:]))
