"""The text corpus: documents, held-out splits and the character vocabulary (no TensorFlow needed)."""

import dataclasses
import os
import re

import numpy as np

__all__ = ["SAMPLE_PLAYS", "CharVocabulary", "Corpus", "held_out_positions", "load_corpus", "sample_path",
           "split_corpus", "split_plays"]

#: The plays of the bundled sample, in the order of the full corpus.
SAMPLE_PLAYS = ("A Midsummer Night's Dream", "As You Like It", "Much Ado About Nothing", "The Comedy of Errors",
                "Twelfth Night", "The Tempest", "Macbeth", "Romeo and Juliet")

_ACT_ONE = re.compile(r"^ACT I$", re.MULTILINE)


def sample_path():
    """The bundled sample: eight plays of the Shakespeare corpus (see ``NOTICE``)."""
    return os.path.join(os.path.dirname(os.path.dirname(__file__)), "datasets", "shakespeare_sample.txt")


def split_plays(text):
    """``[(title, text)]`` of a corpus in the Shakespeare file's layout, or ``[]`` when it has fewer than 3 plays.

    A play starts at its title line (the non-blank line before its first
    ``ACT I``), or at ``ACT I`` itself when the line before is a stage
    direction (a play whose title line is missing).
    """
    lines = text.split("\n")
    starts = []
    for match in _ACT_ONE.finditer(text):
        line = text.count("\n", 0, match.start())
        title = line - 1
        while title > 0 and not lines[title].strip():
            title -= 1
        starts.append(line if title < 0 or lines[title].startswith("[") or not lines[title].strip() else title)
    if len(starts) < 3:
        return []
    starts[0] = 0
    bounds = starts + [len(lines)]
    plays = []
    for a, b in zip(bounds, bounds[1:]):
        body = "\n".join(lines[a:b]).strip("\n") + "\n"
        first = body.split("\n", 1)[0]
        plays.append((first if first != "ACT I" else f"play {len(plays) + 1}", body))
    return plays


@dataclasses.dataclass
class Corpus:
    """Documents of one corpus.

    Attributes:
        documents: ``[(name, text)]`` in order.
        source: Where it came from (a path or ``"sample"``).
        kind: ``"plays"``, ``"files"`` or ``"text"`` (one document).
    """

    documents: list
    source: str
    kind: str


def load_corpus(source="sample"):
    """Reads a corpus: ``"sample"`` (bundled), a UTF-8 text file, or a folder of ``.txt`` files.

    Raises ``ValueError`` with a message naming the path for a missing path,
    a file that is not UTF-8 text, an empty corpus, or a folder without
    ``.txt`` files.
    """
    path = sample_path() if source == "sample" else os.fspath(source)
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if n.endswith(".txt"))
        if not names:
            raise ValueError(f"--data {source!r} is a folder without .txt files.")
        documents = [(n, _read(os.path.join(path, n))) for n in names]
        documents = [(n, t) for n, t in documents if t.strip()]
        if not documents:
            raise ValueError(f"--data {source!r}: every .txt file in it is empty.")
        if len(documents) >= 3:
            return Corpus(documents, source, "files")
        return Corpus([("text", "\n".join(t for _, t in documents))], source, "text")
    if not os.path.exists(path):
        raise ValueError(f"--data {source!r} does not exist: give a UTF-8 text file, a folder of .txt files, "
                         "or 'sample'.")
    text = _read(path)
    if len(text.strip()) == 0:
        raise ValueError(f"--data {source!r} is empty.")
    plays = split_plays(text)
    if plays:
        return Corpus(plays, source, "plays")
    return Corpus([("text", text)], source, "text")


def _read(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path!r} is not UTF-8 text ({e.reason} at byte {e.start}).") from None
    except OSError as e:
        raise ValueError(f"{path!r} cannot be read ({e.strerror or e}).") from None


def held_out_positions(n):
    """``(validation, test)`` positions of ``n`` documents held out as whole documents.

    With 19 or more documents: every 19th, validation from position 4
    (4, 23, 42, ...) and test from 13 (13, 32, ...), so both span the corpus's
    order (for the Shakespeare file: comedies, histories, tragedies). With 3
    to 18 documents: the last but one and the last.
    """
    if n < 3:
        raise ValueError(f"Held-out documents need at least 3 documents; received {n}.")
    if n < 19:
        return [n - 2], [n - 1]
    return list(range(4, n, 19)), list(range(13, n, 19))


def split_corpus(corpus):
    """``{"train": [(name, text)], "validation": [...], "test": [...]}``: contiguous, never interleaved.

    Documents are held out whole (:func:`held_out_positions`); a single
    document is cut into its first 90 %, the next 5 % (validation) and the
    last 5 % (test), at line breaks.
    """
    docs = corpus.documents
    if len(docs) >= 3:
        val, test = held_out_positions(len(docs))
        return {"train": [d for i, d in enumerate(docs) if i not in val and i not in test],
                "validation": [docs[i] for i in val], "test": [docs[i] for i in test]}
    text = docs[0][1]
    if len(text) < 1000:
        raise ValueError(f"The text of {corpus.source!r} has {len(text)} characters; at least 1,000 are needed "
                         "to hold out validation and test blocks.")
    a, b = _line_break(text, 0.90), _line_break(text, 0.95)
    return {"train": [("text[:90%]", text[:a])], "validation": [("text[90%:95%]", text[a:b])],
            "test": [("text[95%:]", text[b:])]}


def _line_break(text, fraction):
    at = int(len(text) * fraction)
    nl = text.find("\n", at)
    return nl + 1 if 0 <= nl < at + 200 else at


class CharVocabulary:
    """Character-level ids: 0 for a character not in the vocabulary, then the training text's characters, sorted.

    Args:
        characters: The characters (a string or iterable), or use :meth:`from_text`.
    """

    def __init__(self, characters):
        self.characters = "".join(sorted(set(characters)))
        self._index = {c: i + 1 for i, c in enumerate(self.characters)}

    @classmethod
    def from_text(cls, text):
        return cls(set(text))

    @property
    def size(self):
        """The number of ids (the characters plus the unknown id 0)."""
        return len(self.characters) + 1

    def encode(self, text):
        """The ids of ``text`` (int32 array)."""
        return np.fromiter((self._index.get(c, 0) for c in text), dtype=np.int32, count=len(text))

    def decode(self, ids):
        return "".join(self.characters[i - 1] if 0 < i <= len(self.characters) else "\ufffd" for i in ids)

    def to_json(self):
        return {"characters": self.characters}

    @classmethod
    def from_json(cls, data):
        return cls(data["characters"])
