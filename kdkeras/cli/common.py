"""What the ``kdkeras`` subcommands share: one-line errors, the output folder, a quiet TensorFlow import.

Every subcommand reports a user mistake as one line with exit status 2
(:class:`UserError`), a numerical failure during training with status 1
(:class:`TrainingFailed`), and answers ``--help`` before TensorFlow is imported.
"""

import argparse
import contextlib
import datetime
import os
import shutil
import sys
import tempfile

EXIT_USAGE = 2


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a user mistake in one line, without the usage block."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


class UserError(Exception):
    """A mistake in the command line or its inputs: reported in one line, exit status 2."""


class TrainingFailed(Exception):
    """Training stopped on a numerical fault: reported in one line, exit status 1."""


def make_parser(prog, description, configure):
    """A one-line-error parser of ``prog``, its flags added by ``configure(parser)``, defaults shown in ``--help``."""
    parser = OneLineParser(prog=prog, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    configure(parser)
    return parser


def default_out(command):
    """``runs/<command>/<timestamp>``: where a run writes when ``--out`` is not given."""
    return os.path.join("runs", command, datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))


def refuse_a_file(path, flag="--out"):
    """A ``UserError`` when the output path names an existing file (checked before anything is made)."""
    if path is not None and os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{flag} {path!r} is a file, not a folder: give a new or existing folder.")


def check_out(path, flag="--out"):
    """Makes the output folder (refusing a path that is a file, or one that cannot be written); returns
    whether the folder is new, so that a run that fails before training can remove it (:func:`remove_if_new`)."""
    refuse_a_file(path, flag)
    new = not os.path.exists(path)
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as e:
        remove_if_new(path, new)
        raise UserError(f"{flag} {path!r} is not a writable directory ({e.strerror or e}).") from None
    return new


def remove_if_new(path, new):
    """Removes a run folder that this run created and left empty of results."""
    if new and os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)


def execute_job(args, prog, check_args, load_inputs, run, modules, resumable=True):
    """Runs a main job from parsed arguments; returns the exit status.

    ``check_args(args)`` checks the flags before TensorFlow is imported (and the
    named ``modules`` with it); ``load_inputs(args)`` returns the tuple that
    ``run(args, *inputs)`` takes, checked before the output folder is made. A
    ``UserError`` exits 2 in one line (a new output folder is removed), a
    ``TrainingFailed`` exits 1, an interrupt 130; a ``resumable`` job names
    ``--resume --out`` in the last two.
    """
    try:
        check_args(args)
    except UserError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    import_tensorflow_quietly(*modules)
    again = f"continue with --resume --out {args.out}." if resumable else ""
    new = False
    try:
        inputs = load_inputs(args)
        new = check_out(args.out)
        run(args, *inputs)
    except UserError as e:
        remove_if_new(args.out, new)
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except TrainingFailed as e:
        print(f"{prog}: error: {e}{' C' + again[1:] if again else ''}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted{'; ' + again if again else '.'}", file=sys.stderr)
        return 130
    return 0


def check_tensorboard(args):
    """``--tensorboard`` needs the tensorboard package (an extra): a ``UserError`` before any training."""
    if getattr(args, "tensorboard", None):
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            raise UserError("--tensorboard needs the tensorboard package: pip install tensorboard "
                            '(or pip install "kdkeras[tensorboard]").')


def check_distillation_args(args):
    """``--loss``, ``--temperature``, ``--alpha`` and ``--tensorboard`` (every command that distils); returns the loss function."""
    import kdkeras

    try:
        kdkeras.checks.check_temperature(args.temperature)
        kdkeras.checks.check_alpha(args.alpha)
        loss = kdkeras.losses.get(getattr(args, "loss", "kl"))
    except (ValueError, TypeError) as e:
        raise UserError(str(e)) from None
    check_tensorboard(args)
    return loss


def checked_recipe(recipe_class, args):
    """The recipe dataclass ``recipe_class`` of the parsed flags (its ``from_args``), with the distillation flags
    checked (:func:`check_distillation_args`); a ``UserError`` names the first bad one."""
    try:
        recipe = recipe_class.from_args(args)
    except ValueError as e:
        raise UserError(str(e)) from None
    check_distillation_args(args)
    return recipe


def tensorboard_callbacks(args, key, recipe=None):
    """Keras' TensorBoard callback for one stage (none without --tensorboard); for the distilled student the
    recipe's temperature and alpha too (:func:`kdkeras.callbacks.tensorboard_stage`)."""
    if not args.tensorboard:
        return ()
    from kdkeras.callbacks import tensorboard_stage

    return tuple(tensorboard_stage(args.tensorboard, key, *((recipe.temperature, recipe.alpha) if recipe else ())))


def import_tensorflow_quietly(*modules):
    """Imports TensorFlow (and the named kdkeras modules) with its native start-up lines hidden."""
    import importlib

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with quiet_native_stderr():
        import tensorflow as tf

        for name in modules:
            importlib.import_module(name)
        tf.get_logger().setLevel("ERROR")
        tf.config.list_physical_devices()  # device discovery logs (no GPU driver, ...) stay hidden too
    return tf


@contextlib.contextmanager
def quiet_native_stderr():
    """Hides TensorFlow's native start-up chatter (absl lines that no environment
    variable silences in TF 2.21) while it is imported; stderr is restored
    before anything else runs, so errors and warnings still show.
    Set KDKERAS_SHOW_TF_STARTUP=1 to see it."""
    if os.environ.get("KDKERAS_SHOW_TF_STARTUP"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def dataclass_from_args(cls, args):
    """A recipe dataclass ``cls`` from the parsed flags of the same names (its other fields keep their defaults)."""
    return cls(**fields_from_args(cls, args))


def fields_from_args(cls, args):
    """``{field: flag value}`` for the fields of the dataclass ``cls`` that ``args`` has a flag for."""
    import dataclasses

    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}


def prepare_corpus(prepare, args, recipe):
    """``prepare(load_corpus(args.data), recipe)``: a text job's data, a ``UserError`` for a bad corpus."""
    from kdkeras import text

    try:
        return prepare(text.load_corpus(args.data), recipe)
    except ValueError as e:
        raise UserError(str(e)) from None
