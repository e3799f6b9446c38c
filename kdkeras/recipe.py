"""The recipe: every setting of a teacher/student/distillation run, in one object.

:class:`Recipe` holds the main job's defaults (the one place they are defined)
and checks its values; :mod:`kdkeras.experiment` trains with it and the
command line builds one from its flags. It imports nothing heavy, so the
command line can show the defaults in ``--help`` before TensorFlow loads.

The defaults are "patient and consistent" distillation (Beyer et al., 2022):
the same random shift and rotation for every model, the teacher running
online on the student's augmented views, cosine schedules, a student budget
twice the teacher's, and ``T = 16`` with ``alpha = 0.5`` (chosen on a
validation split of full MNIST). ``docs/experiments.md`` has the measurements
behind them.
"""

import dataclasses
import math
from typing import Optional

__all__ = ["Recipe"]


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How to train the teacher, the scratch student and the distilled student.

    Attributes:
        teacher_steps: The teacher's training budget in optimizer steps. The
            epochs are derived from it and the data size (:meth:`epochs`), so
            the same recipe trains about as long on 4,000 digits as on 60,000.
        student_steps: The same budget for each student (scratch and distilled).
        teacher_epochs: Epochs of the teacher; when set, overrides ``teacher_steps``.
        student_epochs: Epochs of each student; when set, overrides ``student_steps``.
        batch_size: Global batch size.
        learning_rate: Adam's (initial) learning rate, for every model.
        lr_schedule: ``"cosine"`` (decay to 0 over the model's epochs) or ``"constant"``.
        loss: Distillation loss, a name from :func:`kdkeras.losses.available`.
        temperature: Softmax temperature ``T > 0``.
        alpha: Weight of the hard-label loss in ``[0, 1]`` (``1 - alpha`` weighs distillation).
        shift: Random shift of every training image, a fraction of its size (0: off).
        rotation: Random rotation of every training image, in degrees (0: off).
        mixup: Mixup strength for the students (``Beta(mixup, mixup)``; 0: off).
            With mixup every label is one-hot and the losses are categorical.
        cache: Cache the teacher's logits once when the inputs are not augmented.
        steps_per_execution: At most this many train steps per ``tf.function``
            call (Keras' ``compile(steps_per_execution=...)``; 1: off). The
            stages use the largest divisor of the steps per epoch not above it
            (:meth:`execution_steps`), so every epoch ends where it would with
            one step per call and the updates are the same, only fewer Python
            round trips. Under a strategy with several replicas the stages
            take one step per call (Keras' multi-step loop fails there).
        seed: Seed of the weights, the batch order and the augmentation.
        num_classes: Number of classes.
    """

    teacher_steps: int = 6300
    student_steps: int = 12600
    teacher_epochs: Optional[int] = None
    student_epochs: Optional[int] = None
    batch_size: int = 64
    learning_rate: float = 3e-3
    lr_schedule: str = "cosine"
    loss: str = "kl"
    temperature: float = 16.0
    alpha: float = 0.5
    shift: float = 0.05
    rotation: float = 5.0
    mixup: float = 0.0
    cache: bool = True
    steps_per_execution: int = 16
    seed: int = 0
    num_classes: int = 10

    def __post_init__(self):
        for name in ("teacher_steps", "student_steps", "teacher_epochs", "student_epochs", "batch_size",
                     "num_classes", "steps_per_execution"):
            value, minimum = getattr(self, name), 0 if name == "teacher_epochs" else 1  # 0: a loaded teacher
            if value is None and name.endswith("_epochs"):
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}; received {value!r}.")
        if not (isinstance(self.learning_rate, (int, float)) and math.isfinite(self.learning_rate)
                and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be a positive number; received {self.learning_rate!r}.")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f'lr_schedule must be "cosine" or "constant"; received {self.lr_schedule!r}.')
        if not (_finite(self.shift) and 0 <= self.shift <= 0.5):
            raise ValueError(f"shift must be a fraction in [0, 0.5]; received {self.shift!r}.")
        if not (_finite(self.rotation) and 0 <= self.rotation <= 180):
            raise ValueError(f"rotation must be in [0, 180] degrees; received {self.rotation!r}.")
        if not (_finite(self.mixup) and self.mixup >= 0):
            raise ValueError(f"mixup must be a number >= 0 (0 turns it off); received {self.mixup!r}.")

    @property
    def augmented(self):
        """Whether the students' training views are random (then the teacher must run online)."""
        return bool(self.shift or self.rotation or self.mixup)

    @property
    def soft_labels(self):
        """Whether labels are one-hot rows (mixup blends them)."""
        return self.mixup > 0

    def steps_per_epoch(self, num_examples):
        """Optimizer steps in one epoch over ``num_examples`` (the last batch may be smaller)."""
        if num_examples < 1:
            raise ValueError(f"num_examples must be >= 1; received {num_examples!r}.")
        return -(-num_examples // self.batch_size)

    def execution_steps(self, num_examples):
        """Train steps per ``tf.function`` call on ``num_examples``: the largest divisor of the steps per
        epoch that is at most ``steps_per_execution`` (63 steps and 16: 9)."""
        steps = self.steps_per_epoch(num_examples)
        return max(d for d in range(1, min(self.steps_per_execution, steps) + 1) if steps % d == 0)

    def epochs(self, stage, num_examples):
        """Epochs of ``stage`` (``"teacher"`` or ``"student"``) on ``num_examples`` training examples.

        An explicit ``teacher_epochs``/``student_epochs`` wins; otherwise the
        step budget divided by the steps per epoch, rounded to the nearest
        whole epoch (at least one). The steps actually taken are then within
        half an epoch of the budget: for the teacher's default 6,300, 100
        epochs of the 4,000-digit sample split and 7 of the 60,000 MNIST
        digits; for the students' 12,600, 200 and 13.
        """
        if stage not in ("teacher", "student"):
            raise ValueError(f'stage must be "teacher" or "student"; received {stage!r}.')
        explicit = getattr(self, f"{stage}_epochs")
        if explicit is not None:
            return explicit
        return max(1, round(getattr(self, f"{stage}_steps") / self.steps_per_epoch(num_examples)))

    def replace(self, **changes):
        """A copy with some settings changed (checked again)."""
        return dataclasses.replace(self, **changes)


def _finite(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
