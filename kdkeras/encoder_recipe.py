"""The settings of ``kdkeras distill-classifier``: :class:`EncoderRecipe`, and the command's flags built from it.

Plain Python (no TensorFlow), so that the command answers ``--help`` at once.
:func:`kdkeras.text.encoder_job.prepare` and
:func:`~kdkeras.text.encoder_job.distil_and_report` take a recipe.

The defaults of the distillation terms are those that won on the validation
scenes of the classification job (``docs/results/classification_selection_seed0.json``):
logits KD at ``T = 1`` with ``alpha = 0.5``, plus hidden-state hints (MSE,
weight 1) and MiniLM-v2 attention relations (weight 1) between the layers of
a uniform layer map.
"""

import dataclasses

from kdkeras.lm_recipe import CommandRecipe, _flag, _flag_name, add_arguments as _add_arguments

__all__ = ["EncoderRecipe", "HINT_LOSSES", "LAYER_MAPS", "add_arguments"]

HINT_LOSSES = ("mse", "cosine")
LAYER_MAPS = ("uniform", "last")


@dataclasses.dataclass(frozen=True)
class EncoderRecipe(CommandRecipe):
    """Every setting of ``kdkeras distill-classifier`` (its flags are these fields); checked when made: a
    ``ValueError`` names the first bad one."""

    teacher: str = dataclasses.field(metadata=_flag(
        "a KerasHub text classifier preset: a save_to_preset directory, a Hugging Face BERT "
        "...ForSequenceClassification directory, or a handle", metavar="PRESET"))
    student: str = dataclasses.field(metadata=_flag(
        "a preset (a text classifier, or a backbone that gets a new head), or from-teacher:LAYERS (the teacher with "
        "LAYERS encoder layers: every k-th layer, the embeddings, pooler and head)",
        metavar="PRESET|from-teacher:LAYERS"))
    data: str = dataclasses.field(metadata=_flag(
        'labelled text: a .jsonl file of {"text": ..., "label": ...} lines, or a .csv file with text,label columns',
        metavar="FILE"))
    out: str = dataclasses.field(metadata=_flag("the run folder", metavar="DIR"))
    validation: str = dataclasses.field(default=None, metadata=_flag(
        "held-out labelled text (default: a seeded 10 %% of --data)", metavar="FILE"))
    epochs: int = dataclasses.field(default=3, metadata=_flag("passes over the training texts"))
    batch_size: int = dataclasses.field(default=32, metadata=_flag("texts a step"))
    sequence_length: int = dataclasses.field(default=128, metadata=_flag(
        "tokens per text ([CLS] and [SEP] included; longer texts are cut)"))
    learning_rate: float = dataclasses.field(default=5e-5, metadata=_flag(
        "AdamW's peak rate (warm-up over the first 10 %% of the steps, then cosine decay to 0)"))
    temperature: float = dataclasses.field(default=1.0, metadata=_flag("softmax temperature of the soft targets"))
    alpha: float = dataclasses.field(default=0.5, metadata=_flag("weight of the hard-label loss (1: no teacher)"))
    hidden_weight: float = dataclasses.field(default=1.0, metadata=_flag(
        "weight of the hidden-state hints between mapped layers (0: none)"))
    attention_weight: float = dataclasses.field(default=1.0, metadata=_flag(
        "weight of the MiniLM-v2 self-attention relations between mapped layers (0: none)"))
    hint_loss: str = dataclasses.field(default="mse", metadata=_flag(
        "hidden-state loss per token: mse (TinyBERT) or cosine (DistilBERT)", choices=HINT_LOSSES))
    layer_map: str = dataclasses.field(default="uniform", metadata=_flag(
        "student-to-teacher layers of the hints and relations: uniform (layer i learns from teacher layer "
        "ceil((i+1) L_t / L_s) - 1) or last (the last layers only, as MiniLM)", choices=LAYER_MAPS))
    seed: int = dataclasses.field(default=0, metadata=_flag("seed of the split, the new weights and the batch order"))
    resume: bool = dataclasses.field(default=False, metadata=_flag("continue an interrupted run in --out"))
    export: str = dataclasses.field(default=None, metadata=_flag(
        "also write the student in Hugging Face's layout to DIR/student-hf (BERT)", choices=("hf",)))
    verbose: int = dataclasses.field(default=1, metadata=_flag("0 silent, 1 a progress bar, 2 a line an epoch",
                                                                choices=(0, 1, 2)))

    def __post_init__(self):
        for name in ("epochs", "batch_size", "sequence_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{_flag_name(name)} must be a positive integer; received {getattr(self, name)}.")
        if self.sequence_length < 4:
            raise ValueError(f"--sequence-length must be at least 4; received {self.sequence_length}.")
        if not self.learning_rate > 0:
            raise ValueError(f"--learning-rate must be > 0; received {self.learning_rate}.")
        for name in ("hidden_weight", "attention_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{_flag_name(name)} must be a number >= 0; received {getattr(self, name)}.")
        for name, allowed in (("hint_loss", HINT_LOSSES), ("layer_map", LAYER_MAPS), ("export", (None, "hf")),
                              ("verbose", (0, 1, 2))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{_flag_name(name)} must be one of {', '.join(str(a) for a in allowed if a)}; "
                                 f"received {getattr(self, name)!r}.")
        layers = self.student_layers
        if layers is not None and layers < 1:
            raise ValueError(f"--student {self.student!r}: from-teacher needs a positive number of layers.")


def add_arguments(parser):
    """Adds one flag per :class:`EncoderRecipe` field to ``parser``."""
    _add_arguments(parser, EncoderRecipe)
