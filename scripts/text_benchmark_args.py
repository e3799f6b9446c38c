"""The flags the language-model benchmark scripts share: a text file, the sequence length and the batch size."""

import argparse
import os


def parser(doc, sequence_length, batch_size):
    """An ``ArgumentParser`` described by ``doc``'s first line, with ``--data``, ``--sequence-length``, ``--batch-size``."""
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    p.add_argument("--data", required=True, help="a UTF-8 text file")
    p.add_argument("--sequence-length", type=int, default=sequence_length)
    p.add_argument("--batch-size", type=int, default=batch_size)
    return p


def parse(p, argv=None):
    """``p.parse_args(argv)``, refusing a ``--data`` that is not a file."""
    args = p.parse_args(argv)
    if not os.path.isfile(args.data):
        p.error(f"--data {args.data!r} is not a file")
    return args
