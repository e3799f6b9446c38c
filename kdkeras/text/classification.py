"""Which play is this passage from? Labelled passages of the plays, held out by whole scenes (no TensorFlow needed).

The task of the text-classification job: a passage of spoken text (speaker
names, stage directions and headings removed) is labelled with its play.
Splits hold out **whole scenes**: in every play, scenes ``1, 6, 11, ...``
(counting from 0) are validation and scenes ``3, 8, 13, ...`` are test, so no
line of a held-out scene is seen in training, while every play (every class)
appears in all three splits. Passages are cut inside a scene, never across
two, and never overlap in the held-out splits.

Words are lower-cased and split from punctuation; :class:`WordVocabulary` is
built from the training scenes only (words seen at least twice), so held-out
text can hold unknown words.
"""

import collections
import dataclasses
import re

import numpy as np

__all__ = ["PAD", "UNK", "CLS", "SEP", "ClassificationData", "PassageSet", "WordVocabulary", "classification_data",
           "scene_split", "speech", "split_scenes", "words"]

PAD, UNK, CLS, SEP = 0, 1, 2, 3
_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")
_SCENE = re.compile(r"^SCENE [^\n]*$", re.MULTILINE)
_HEADING = re.compile(r"^(ACT [IVXL]+|SCENE |PROLOGUE|EPILOGUE|INDUCTION)")
_SPEAKER = re.compile(r"^[A-Z][A-Z0-9 '.,&\-]*:$")
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)*|[^\sa-z]")


def split_scenes(play):
    """The scenes of one play's text, each from its ``SCENE`` line to the next (the text before the first goes to it)."""
    starts = [m.start() for m in _SCENE.finditer(play)]
    if not starts:
        return [play]
    bounds = [0] + starts[1:] + [len(play)]
    return [play[a:b] for a, b in zip(bounds, bounds[1:])]


def speech(text):
    """The spoken lines of ``text``: without blank lines, headings, speaker names and ``[stage directions]``."""
    kept = []
    for line in text.split("\n"):
        line = line.strip()
        if not line or line.startswith("[") or _HEADING.match(line) or _SPEAKER.match(line):
            continue
        kept.append(line)
    return "\n".join(kept)


def words(text):
    """Lower-cased words (with inner apostrophes) and punctuation marks, in order."""
    return _WORD.findall(text.lower())


def scene_split(index):
    """``"validation"``, ``"test"`` or ``"train"`` for the scene at ``index`` (from 0) of its play."""
    return {1: "validation", 3: "test"}.get(index % 5, "train")


class WordVocabulary:
    """Word ids: ``[PAD]`` 0, ``[UNK]`` 1, ``[CLS]`` 2, ``[SEP]`` 3, then the words by frequency (ties alphabetical).

    Args:
        words: The vocabulary's words, most frequent first (see :meth:`from_words`).
    """

    def __init__(self, words):
        self.words = list(words)
        self._index = {w: i + len(_SPECIALS) for i, w in enumerate(self.words)}

    @classmethod
    def from_words(cls, tokens, min_count=2, max_size=12000):
        """Words seen at least ``min_count`` times, at most ``max_size`` of them."""
        counts = collections.Counter(tokens)
        kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls(kept[:max_size])

    @property
    def size(self):
        """The number of ids, special ones included."""
        return len(self.words) + len(_SPECIALS)

    def encode(self, tokens):
        """The ids of ``tokens`` (``[UNK]`` for a word not in the vocabulary), int32."""
        return np.fromiter((self._index.get(t, UNK) for t in tokens), dtype=np.int32, count=len(tokens))

    def decode(self, ids):
        return " ".join(_SPECIALS[i] if i < len(_SPECIALS) else self.words[i - len(_SPECIALS)] for i in ids)

    def to_json(self):
        return {"words": self.words}

    @classmethod
    def from_json(cls, data):
        return cls(data["words"])


@dataclasses.dataclass
class PassageSet:
    """Passages of one split as model inputs.

    Attributes:
        token_ids: ``[passages, sequence_length]`` int32: ``[CLS]`` words ``[SEP]`` then ``[PAD]``.
        padding_mask: ``[passages, sequence_length]`` int32, 1 on real tokens.
        labels: ``[passages]`` int32, the play's class id.
        texts: The passages as read (their spoken words, joined by spaces), for reports.
    """

    token_ids: np.ndarray
    padding_mask: np.ndarray
    labels: np.ndarray
    texts: list

    def __len__(self):
        return len(self.labels)

    def inputs(self, rows=slice(None)):
        """The KerasHub BERT inputs ``{"token_ids", "segment_ids", "padding_mask"}`` of ``rows``."""
        ids = self.token_ids[rows]
        return {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": self.padding_mask[rows]}


@dataclasses.dataclass
class ClassificationData:
    """The labelled passages of a corpus of plays.

    Attributes:
        classes: The play names; class ``i`` is ``classes[i]``.
        vocabulary: The :class:`WordVocabulary` of the training scenes.
        train, validation, test: :class:`PassageSet` of each split.
        scenes: Scenes per split (``{"train": n, ...}``).
        sequence_length: Tokens per passage, ``[CLS]`` and ``[SEP]`` included.
    """

    classes: list
    vocabulary: WordVocabulary
    train: PassageSet
    validation: PassageSet
    test: PassageSet
    scenes: dict
    sequence_length: int


def _passages(scene_words, length, stride):
    """Cuts one scene's words into passages of ``length`` words every ``stride`` words; a tail of at least half
    a passage is kept (padded)."""
    out = []
    for start in range(0, max(len(scene_words), 1), stride):
        piece = scene_words[start:start + length]
        if len(piece) >= max(length // 2, 1) or (start == 0 and piece):
            out.append(piece)
        if start + length >= len(scene_words):
            break
    return out


def _without_title(name, play):
    """The play without its title line (the title names the label)."""
    first, _, rest = play.partition("\n")
    return rest if first.strip() == name.strip() else play


def _encode(pieces, labels, vocabulary, sequence_length):
    ids = np.full((len(pieces), sequence_length), PAD, np.int32)
    for row, piece in enumerate(pieces):
        ids[row, 0] = CLS
        ids[row, 1:len(piece) + 1] = vocabulary.encode(piece)
        ids[row, len(piece) + 1] = SEP
    return PassageSet(ids, (ids != PAD).astype(np.int32), np.asarray(labels, np.int32),
                      [" ".join(p) for p in pieces])


def classification_data(corpus, sequence_length=64, train_stride=None, min_count=2, max_vocabulary=12000):
    """Labelled passages of a corpus of plays (:func:`kdkeras.text.load_corpus` of a file in the plays' layout).

    Args:
        corpus: A :class:`kdkeras.text.Corpus` whose documents are plays with ``SCENE`` lines.
        sequence_length: Tokens per passage with ``[CLS]`` and ``[SEP]`` (so ``sequence_length - 2`` words).
        train_stride: Words between the starts of training passages (default: a whole passage, no
            overlap); validation and test passages never overlap.
        min_count, max_vocabulary: Of the :class:`WordVocabulary`.

    Raises:
        ValueError: for fewer than 2 plays, a play with fewer than 4 scenes (it could not appear in every
            split), or ``sequence_length < 8``.
    """
    if sequence_length < 8:
        raise ValueError(f"sequence_length must be at least 8; received {sequence_length}.")
    plays = [(name, split_scenes(_without_title(name, text))) for name, text in corpus.documents]
    if corpus.kind != "plays" or len(plays) < 2:
        raise ValueError(f"The classification job needs a corpus of plays (a file in the layout of "
                         f"../shared/data/shakespeare.txt, with ACT and SCENE lines); {corpus.source!r} has "
                         f"{len(plays)} document(s) of kind {corpus.kind!r}.")
    few = [f"{name} ({len(scenes)})" for name, scenes in plays if len(scenes) < 4]
    if few:
        raise ValueError(f"Every play needs at least 4 scenes to appear in the training, validation and test "
                         f"splits; these have fewer: {', '.join(few)}.")
    length = sequence_length - 2
    split_words = {"train": [], "validation": [], "test": []}
    for label, (_, scenes) in enumerate(plays):
        for index, scene in enumerate(scenes):
            split_words[scene_split(index)].append((label, words(speech(scene))))
    vocabulary = WordVocabulary.from_words([w for _, ws in split_words["train"] for w in ws], min_count,
                                           max_vocabulary)
    sets = {}
    for split, scenes in split_words.items():
        stride = (train_stride or length) if split == "train" else length
        pieces = [(label, p) for label, ws in scenes for p in _passages(ws, length, stride)]
        sets[split] = _encode([p for _, p in pieces], [label for label, _ in pieces], vocabulary, sequence_length)
    return ClassificationData([name for name, _ in plays], vocabulary, sets["train"], sets["validation"],
                              sets["test"], {k: len(v) for k, v in split_words.items()}, sequence_length)
