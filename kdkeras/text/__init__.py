"""Text for language-model distillation: the corpus, its held-out blocks, characters and windows.

- :func:`load_corpus`: the bundled Shakespeare sample, a UTF-8 file or a
  folder of them, split into documents (the plays of a Shakespeare file, the
  files of a folder, or one document).
- :func:`split_corpus`: validation and test are whole documents (for the
  plays: every 19th play, see :func:`held_out_positions`), or for a single
  document its last two contiguous 5 % blocks; never lines interleaved with
  the training text.
- :class:`CharVocabulary`: a character-level tokenizer built from the
  training text (no download); id 0 is any character it has not seen.
- :func:`windows`: fixed windows of ids and their next-character labels.
- :func:`build_gpt`: a GPT-style causal language model in plain Keras layers.
- :func:`generate`: seeded sampling of continuations.

Sequence-level distillation data: :mod:`kdkeras.text.generation` (the
teacher completes prompts on its KV cache; ``kdkeras generate``), with
:func:`complete_prompts` (its ``generate``) and :class:`Sampling` here.

The text-classification job (which play is a passage from?) lives in
:mod:`kdkeras.text.classification` (passages held out by whole scenes, a word
vocabulary; no TensorFlow) and :mod:`kdkeras.text.classifier` (the KerasHub
BERT teacher, the student and its four training methods).
"""

from kdkeras.text.corpus import (
    SAMPLE_PLAYS,
    CharVocabulary,
    Corpus,
    held_out_positions,
    load_corpus,
    sample_path,
    split_corpus,
    split_plays,
)
from kdkeras.text.generation import Sampling, read_prompts
from kdkeras.text.generation import generate as complete_prompts
from kdkeras.text.models import PositionEmbedding, build_gpt, generate
from kdkeras.text.windows import windows

__all__ = [
    "CharVocabulary",
    "Corpus",
    "PositionEmbedding",
    "Sampling",
    "SAMPLE_PLAYS",
    "build_gpt",
    "complete_prompts",
    "generate",
    "held_out_positions",
    "load_corpus",
    "read_prompts",
    "sample_path",
    "split_corpus",
    "split_plays",
    "windows",
]
