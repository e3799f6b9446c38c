"""The settings of ``kdkeras distill-lm``: :class:`LMRecipe`, and the command's flags built from it.

Plain Python (no TensorFlow), so that the command answers ``--help`` at once.
:func:`kdkeras.text.lm_job.prepare` and :func:`~kdkeras.text.lm_job.distil_and_report`
take a recipe.
"""

import dataclasses
import os

__all__ = ["DTYPE_POLICIES", "LMRecipe", "LOSSES", "STRATEGIES", "TEACHER_DTYPES", "add_arguments"]

LOSSES = ("kl", "reverse_kl", "jsd", "skew_kl", "skew_reverse_kl", "tv")
DTYPE_POLICIES = ("float32", "mixed_bfloat16")
TEACHER_DTYPES = ("float32", "bfloat16")
STRATEGIES = ("default", "mirrored", "multiworker")


def _flag(help_text, **argparse_options):
    """A recipe field's command-line help and ``argparse`` options."""
    return {"help": help_text, **argparse_options}


class CommandRecipe:
    """What the recipes of the distilling commands share: ``from-teacher:N`` and the parsed command line."""

    @property
    def student_layers(self):
        """``N`` of ``from-teacher:N`` (a ``ValueError`` when it is not a number), else ``None``."""
        if not self.student.startswith("from-teacher:"):
            return None
        try:
            return int(self.student.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"--student {self.student!r}: write from-teacher:LAYERS with LAYERS a number.") from None

    @classmethod
    def from_args(cls, args):
        """The recipe of a parsed command line (an ``argparse`` namespace with every field)."""
        return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


@dataclasses.dataclass(frozen=True)
class LMRecipe(CommandRecipe):
    """Every setting of ``kdkeras distill-lm`` (its flags are these fields, ``--sequence-length`` for
    ``sequence_length``); checked when made: a ``ValueError`` names the first bad one."""

    teacher: str = dataclasses.field(metadata=_flag(
        "a KerasHub causal LM preset: a save_to_preset or Hugging Face directory, or a handle", metavar="PRESET"))
    student: str = dataclasses.field(metadata=_flag(
        "a preset, or from-teacher:LAYERS (the teacher's architecture with LAYERS layers, initialised from every "
        "k-th teacher layer)", metavar="PRESET|from-teacher:LAYERS"))
    data: tuple = dataclasses.field(metadata=_flag(
        "a .txt file, a folder of .txt files, or a .jsonl file (text, or prompt/completion pairs such as kdkeras "
        "generate writes); give it more than once to mix sources", action="append"))
    out: str = dataclasses.field(metadata=_flag("the run folder", metavar="DIR"))
    steps: int = dataclasses.field(default=1000, metadata=_flag("optimizer steps"))
    sequence_length: int = dataclasses.field(default=128, metadata=_flag("tokens per training window"))
    batch_size: int = dataclasses.field(default=8, metadata=_flag("windows a step"))
    learning_rate: float = dataclasses.field(default=1e-3, metadata=_flag("Adam's peak rate (cosine decay)"))
    loss: str = dataclasses.field(default="kl", metadata=_flag("the distillation loss", choices=LOSSES))
    temperature: float = dataclasses.field(default=1.0, metadata=_flag("softmax temperature of the soft targets"))
    alpha: float = dataclasses.field(default=0.0, metadata=_flag("weight of the hard-label loss (1: no teacher)"))
    top_k: int = dataclasses.field(default=0, metadata=_flag("cache the teacher's top-k in memory first (0: online)"))
    teacher_cache: str = dataclasses.field(default=None, metadata=_flag(
        "train from a kdkeras cache-teacher folder", metavar="CACHE"))
    on_policy_fraction: float = dataclasses.field(default=0.0, metadata=_flag(
        "the share of batches the student continues by sampling (GKD)"))
    max_new_tokens: int = dataclasses.field(default=32, metadata=_flag("on-policy continuation length"))
    lora_rank: int = dataclasses.field(default=0, metadata=_flag("train LoRA adapters of this rank (0: all weights)"))
    validation: str = dataclasses.field(default=None, metadata=_flag(
        "held-out data (default: a seeded 5 %% of DATA)", metavar="FILE"))
    dtype_policy: str = dataclasses.field(default="float32", metadata=_flag(
        "the student's computation: mixed_bfloat16 computes in bfloat16 on float32 weights (losses stay float32)",
        choices=DTYPE_POLICIES))
    teacher_dtype: str = dataclasses.field(default="float32", metadata=_flag(
        "the teacher's weights and computation (bfloat16: half the memory)", choices=TEACHER_DTYPES))
    strategy: str = dataclasses.field(default="default", metadata=_flag(
        "tf.distribute strategy: default (one device), mirrored (every local GPU, or every logical CPU device), "
        "multiworker (the machines of TF_CONFIG: every worker runs the same command and --out, the chief "
        "writes); the global batch is --batch-size", choices=STRATEGIES))
    export: str = dataclasses.field(default=None, metadata=_flag(
        "also write the student in Hugging Face's layout to DIR/student-hf (GPT-2, Llama 3, Gemma, Mistral, Qwen2, "
        "Qwen3)", choices=("hf",)))
    seed: int = dataclasses.field(default=0, metadata=_flag("seed of the split, the weights and every draw"))
    resume: bool = dataclasses.field(default=False, metadata=_flag("continue an interrupted run in --out"))
    tensorboard: str = dataclasses.field(default=None, metadata=_flag(
        "write TensorBoard logs (loss, its terms, temperature, alpha) under this folder", metavar="DIR"))
    verbose: int = dataclasses.field(default=1, metadata=_flag("0 silent, 1 a progress bar, 2 a line an epoch",
                                                                choices=(0, 1, 2)))

    def __post_init__(self):
        object.__setattr__(self, "data", tuple([self.data] if isinstance(self.data, (str, os.PathLike))
                                               else self.data))
        for name in ("steps", "sequence_length", "batch_size", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{_flag_name(name)} must be a positive integer; received {getattr(self, name)}.")
        for name in ("top_k", "lora_rank"):
            if getattr(self, name) < 0:
                raise ValueError(f"{_flag_name(name)} must be 0 or positive; received {getattr(self, name)}.")
        for name, allowed in (("loss", LOSSES), ("dtype_policy", DTYPE_POLICIES), ("teacher_dtype", TEACHER_DTYPES),
                              ("strategy", STRATEGIES),
                              ("verbose", (0, 1, 2))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{_flag_name(name)} must be one of {', '.join(map(str, allowed))}; received "
                                 f"{getattr(self, name)!r}.")
        if not self.learning_rate > 0:
            raise ValueError(f"--learning-rate must be > 0; received {self.learning_rate}.")
        if not 0 <= self.on_policy_fraction <= 1:
            raise ValueError(f"--on-policy-fraction must be in [0, 1]; received {self.on_policy_fraction}.")
        if self.on_policy_fraction and self.max_new_tokens >= self.sequence_length:
            raise ValueError("--max-new-tokens must be smaller than --sequence-length.")
        if self.on_policy_fraction and (self.teacher_cache or self.top_k):
            raise ValueError("on-policy distillation needs the teacher online: drop --teacher-cache / --top-k.")
        if self.export not in (None, "hf"):
            raise ValueError(f"--export must be hf; received {self.export!r}.")
        if self.resume and self.strategy == "multiworker":
            raise ValueError("--resume is not supported with --strategy multiworker (only the chief keeps files); "
                             "rerun the workers from the start.")
        if self.teacher_cache and self.top_k:
            raise ValueError("give --teacher-cache or --top-k, not both.")
        if self.teacher_cache and not os.path.isdir(self.teacher_cache):
            raise ValueError(f"--teacher-cache {self.teacher_cache!r} is not a folder.")
        layers = self.student_layers
        if layers is not None and layers < 1:
            raise ValueError(f"--student {self.student!r}: from-teacher needs a positive number of layers.")


def _flag_name(field):
    return "--" + field.replace("_", "-")


def add_arguments(parser, recipe=None):
    """Adds one flag per field of ``recipe`` (a recipe dataclass; default :class:`LMRecipe`) to ``parser``
    (required where the field has no default; help and ``argparse`` options from the field's metadata)."""
    for field in dataclasses.fields(recipe or LMRecipe):
        options = dict(field.metadata)
        required = field.default is dataclasses.MISSING
        if field.type is bool or field.type == "bool":
            parser.add_argument(_flag_name(field.name), action="store_true", help=options["help"])
            continue
        if options.get("action") != "append":
            kind = {"int": int, "float": float}.get(field.type if isinstance(field.type, str) else field.type.__name__,
                                                     str)
            options["type"] = kind
        if required:
            options["required"] = True
        else:
            options["default"] = field.default
        parser.add_argument(_flag_name(field.name), **options)
