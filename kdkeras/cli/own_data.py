"""What ``kdkeras distill`` and ``kdkeras tune`` share: the model and data flags, and loading both.

The teacher is one trained ``.keras`` file (several make an ensemble: the mean
of their logits); the student an untrained ``.keras`` file or a builder name;
the data ``sample``, an ``.npz``, a folder of class folders, or
``tfds:NAME[:SPLIT]``. Images are fitted to each model's input shape (size and
grey/RGB). Every mistake in the inputs is a :class:`UserError` (one line, exit 2).
"""

from kdkeras.cli.common import UserError, check_distillation_args
from kdkeras.cli.train_mnist import load_teachers
from kdkeras.recipe import Recipe

DEFAULTS = Recipe(student_steps=6300, shift=0.0, rotation=0.0, temperature=4.0, alpha=0.1)
BUILDERS = ("article", "tiny", "mlp:UNITS,...")


def add_model_data_flags(p):
    """The flags ``distill`` and ``tune`` share: the models, the data, the budget and the augmentation."""
    p.add_argument("--teacher", nargs="+", required=True, metavar="PATH",
                   help="trained teacher .keras file(s); several are distilled as their ensemble (mean logits). "
                        "Loaded with safe_mode on")
    p.add_argument("--teacher-outputs", default="logits", choices=("logits", "probabilities"),
                   help="probabilities: the teacher ends in a softmax (e.g. keras.applications defaults)")
    p.add_argument("--student", default="article",
                   help='an untrained .keras architecture, or a builder: "article", "tiny", "mlp:800,800"')
    p.add_argument("--data", default="sample",
                   help='"sample", an .npz (Keras layout or x/y), a folder of class folders, or tfds:NAME[:SPLIT]')
    p.add_argument("--steps", type=int, default=DEFAULTS.student_steps,
                   help="training budget of each student in optimizer steps (epochs derived from the data size)")
    p.add_argument("--epochs", type=int, default=None, help="epochs of each student; overrides --steps")
    p.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size)
    p.add_argument("--shift", type=float, default=0.0, help="random shift of training images (0: off)")
    p.add_argument("--rotation", type=float, default=0.0, help="random rotation in degrees (0: off)")
    p.add_argument("--seed", type=int, default=0)


def _num_classes(teacher, input_shape):
    import numpy as np

    return int(np.asarray(teacher(np.zeros((1, *input_shape), "float32"))).shape[-1])


def _student(spec, input_shape, num_classes, seed):
    import keras

    import kdkeras

    if spec.endswith(".keras"):
        try:
            return keras.models.load_model(spec, compile=False)
        except Exception as e:  # noqa: BLE001
            raise UserError(f"could not load --student {spec!r}: {e}") from None
    kwargs = dict(input_shape=input_shape, num_classes=num_classes, seed=seed)
    if spec == "article":
        return kdkeras.build_student(**kwargs)
    if spec == "tiny":
        return kdkeras.build_cnn((4,), 16, name="tiny", **kwargs)
    if spec.startswith("mlp:"):
        try:
            units = tuple(int(u) for u in spec[4:].split(","))
            return kdkeras.build_mlp(units, **kwargs)
        except ValueError:
            raise UserError(f"--student {spec!r}: expected mlp:UNITS,UNITS,... with positive integers.") from None
    raise UserError(f"--student {spec!r}: a .keras file or one of {', '.join(BUILDERS)}.")


def prepare(args):
    """Loads and checks everything before training: ``(teacher, student, scratch, train, test, recipe)``."""
    import keras

    from kdkeras import checks
    from kdkeras.data.images import fit_images, load_image_data, with_input_shape

    # distill fixes these four; tune searches them (its trials override the recipe's)
    distillation = {k: getattr(args, k) for k in ("learning_rate", "loss", "temperature", "alpha") if hasattr(args, k)}
    if distillation:
        check_distillation_args(args)
    teacher = load_teachers(args.teacher, args.teacher_outputs)
    first = teacher.members[0] if hasattr(teacher, "members") else teacher
    first = getattr(first, "model", first)
    teacher_shape = tuple(getattr(first, "input_shape", (None,))[1:])
    try:
        (x, y), (x_test, y_test) = load_image_data(args.data, image_size=teacher_shape[:2] or None)
    except (ValueError, OSError) as e:
        raise UserError(f"could not load --data {args.data!r}: {e}") from None
    try:
        student_input = x.shape[1:] if not args.student.endswith(".keras") else None
        num_classes = _num_classes(teacher, teacher_shape)
        student = _student(args.student, tuple(student_input or ()), num_classes, args.seed)
        checks.check_model(student, "student")
        checks.check_same_outputs(teacher, student)
        x, x_test = fit_images(x, student, "student"), fit_images(x_test, student, "student")
        teacher = with_input_shape(teacher, x.shape[1:])
    except ValueError as e:
        raise UserError(str(e)) from None
    student_classes = _num_classes(student, x.shape[1:])
    if student_classes != num_classes:
        raise UserError(f"the teacher predicts {num_classes} classes but the student {student_classes}: "
                        "they must match.")
    top = int(max(y.max(), y_test.max()))
    if top >= num_classes:
        raise UserError(f"the data has labels up to {top}, but the teacher predicts {num_classes} classes.")
    scratch = keras.models.clone_model(student)
    scratch.set_weights(student.get_weights())  # the baseline starts from the same weights
    try:
        recipe = Recipe(student_steps=args.steps, student_epochs=args.epochs, batch_size=args.batch_size,
                        shift=args.shift, rotation=args.rotation, seed=args.seed, num_classes=num_classes,
                        **distillation)
    except ValueError as e:
        raise UserError(str(e)) from None
    return teacher, student, scratch, (x, y), (x_test, y_test), recipe


