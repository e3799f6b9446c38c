"""Writes ``mnist_distillation.ipynb`` from the cells below and executes it in place.

The notebook is the keras.io "Knowledge Distillation" story told with kdkeras. It is
kept as code here so that a change to the story is a readable diff, and it is saved
with the outputs of a real run on the bundled MNIST sample::

    python notebooks/build_notebook.py             # write + execute (a few minutes on 2 CPUs)
    python notebooks/build_notebook.py --no-execute

The tests execute the saved notebook with small epochs (``KDKERAS_NB_TEACHER_EPOCHS``,
``KDKERAS_NB_STUDENT_EPOCHS``) and fail on any cell error.
"""

import argparse
import os
import sys

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = os.path.dirname(os.path.abspath(__file__))
NOTEBOOK = os.path.join(HERE, "mnist_distillation.ipynb")

CELLS = [
    ("md", """\
# Knowledge distillation on MNIST with kdkeras

A large *teacher* network is trained first. A much smaller *student* is then trained to match the
teacher's **softened** output distribution as well as the true labels (Hinton, Vinyals & Dean, 2015).
The soft targets carry what the teacher knows about which digits look alike, so the student learns
more from each image than the hard label alone tells it.

This notebook follows the keras.io "Knowledge Distillation" example: load data, train the teacher,
distil with `model.fit`, evaluate, and look at the predictions. It runs offline on the bundled
5,000-digit MNIST sample (4,000 train / 1,000 test) in a few minutes on a laptop CPU; set
`SOURCE = "auto"` to use full MNIST from tensorflow-datasets when it is available."""),
    ("md", "## Parameters\n\nThe epoch counts can be overridden from the environment (the tests run this notebook with one epoch each)."),
    ("code", """\
import os

SOURCE = os.environ.get("KDKERAS_NB_SOURCE", "sample")  # "auto" for full MNIST via tensorflow-datasets
TEACHER_EPOCHS = int(os.environ.get("KDKERAS_NB_TEACHER_EPOCHS", 12))
STUDENT_EPOCHS = int(os.environ.get("KDKERAS_NB_STUDENT_EPOCHS", 20))
BATCH_SIZE = 64
TEMPERATURE = 8.0  # a quick recipe without augmentation; the main job's defaults: kdkeras.Recipe() (T = 16, alpha = 0.5)
ALPHA = 0.5        # weight of the hard-label loss; 1 - ALPHA weighs the distillation loss
SEED = 0"""),
    ("code", """\
%matplotlib inline
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras
import numpy as np
import tensorflow as tf

import kdkeras
from kdkeras import evaluation, plotting

tf.get_logger().setLevel("ERROR")
# Keras 3.15 warns on every fit() with a tf.data.Dataset that its own `shuffle` argument is
# ignored; our datasets are shuffled by tf.data (make_dataset(..., shuffle=True)).
warnings.filterwarnings("ignore", message="`shuffle=True` was passed")
print("TensorFlow", tf.__version__, "| Keras", keras.__version__, "| kdkeras", kdkeras.__version__)"""),
    ("md", "## Data\n\nImages are float32 in [0, 1] with shape (28, 28, 1); labels are integers 0-9."),
    ("code", """\
(x_train, y_train), (x_test, y_test) = kdkeras.load_mnist_arrays(SOURCE)
print("train:", x_train.shape, "test:", x_test.shape)

def train_ds():
    # The same shuffled batches for every model, so the comparison is fair.
    return kdkeras.make_dataset(x_train, y_train, BATCH_SIZE, shuffle=True, seed=SEED)

test_ds = kdkeras.make_dataset(x_test, y_test, BATCH_SIZE)"""),
    ("md", """\
## The teacher

The article's CNN: two convolution blocks (32 and 64 filters) and a 128-unit dense layer. Its last
layer outputs **logits** (no softmax): distillation needs them to apply the temperature."""),
    ("code", """\
keras.utils.set_random_seed(SEED)
teacher = kdkeras.build_teacher(seed=SEED)
teacher.compile(
    optimizer="adam",
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"],
)
teacher_history = teacher.fit(train_ds(), epochs=TEACHER_EPOCHS, validation_data=test_ds, verbose=2)"""),
    ("md", """\
## What the student learns from: soft targets

At T = 1 the teacher is almost certain. Dividing the logits by a temperature T > 1 before the softmax
reveals the small probabilities it gives the other classes: this is the "dark knowledge" in the
soft targets."""),
    ("code", """\
# A test digit the teacher classifies correctly but not with total certainty.
probs = tf.nn.softmax(teacher.predict(x_test, verbose=0)).numpy()
confidence = np.where(probs.argmax(-1) == y_test, probs.max(-1), np.nan)
index = int(np.nanargmin(np.abs(confidence - np.nanpercentile(confidence, 5))))
plotting.plot_soft_targets(teacher, x_test, temperatures=(1, 3, TEMPERATURE), index=index)"""),
    ("md", """\
## The baseline: the student trained from scratch

The student has one convolution block of 16 filters and a 32-unit dense layer (about 2.6 times fewer
parameters than the teacher). Trained on the hard labels alone, it is the baseline distillation
has to beat."""),
    ("code", """\
keras.utils.set_random_seed(SEED)
scratch = kdkeras.build_student(seed=SEED, name="student_scratch")
scratch.compile(
    optimizer="adam",
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"],
)
scratch_history = scratch.fit(train_ds(), epochs=STUDENT_EPOCHS, validation_data=test_ds, verbose=2)"""),
    ("md", """\
## Distillation

`Distiller` is a `keras.Model`: compile it, then `fit`. For each batch it computes

`loss = alpha * CE(y, student) + (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T))`

with the teacher frozen. The teacher never changes, so its logits are computed once for the whole
training set (`cache_teacher_logits`) instead of at every step; the result is the same, and each
epoch costs no more than training the student alone. (Do not cache when the input is randomly
augmented: the teacher must see the same augmented image as the student.)"""),
    ("code", """\
keras.utils.set_random_seed(SEED)
student = kdkeras.build_student(seed=SEED, name="student")
distiller = kdkeras.Distiller(student=student, teacher=teacher)
distiller.compile(
    optimizer="adam",
    metrics=["accuracy"],
    student_loss_fn=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    distillation_loss_fn="kl",
    alpha=ALPHA,
    temperature=TEMPERATURE,
)
cached = kdkeras.cache_teacher_logits(teacher, train_ds(), seed=SEED)
distill_history = distiller.fit(cached, epochs=STUDENT_EPOCHS, validation_data=test_ds, verbose=2)"""),
    ("md", """\
## Evaluation

`kdkeras.evaluation.compare` measures every model on the test split: accuracy, macro F1, size,
latency per image, and for the students their agreement with the teacher and the mean KL to it.
`scripts/train_mnist.py` writes the same numbers to `metrics.json`."""),
    ("code", """\
metrics = evaluation.compare(
    {"teacher": teacher, "student (distilled)": student, "student (scratch)": scratch},
    (x_test, y_test),
    teacher=teacher,
)
print(evaluation.format_table(metrics))"""),
    ("md", "## Sample predictions\n\nMistakes are framed in red and marked with a cross; up to half of the grid is drawn from digits that some model gets wrong."),
    ("code", """\
plotting.plot_predictions(
    {"teacher": teacher, "distilled": student, "scratch": scratch}, x_test, y_test, n=24, seed=SEED
)"""),
    ("code", """\
plotting.plot_history(
    {"teacher": teacher_history, "scratch student": scratch_history, "distilled student": distill_history}
)"""),
    ("md", """\
## Deploy the student

The student inside the `Distiller` is a plain Keras model: save it on its own and it loads without
kdkeras. `predict` returns logits at T = 1."""),
    ("code", """\
import tempfile

path = os.path.join(tempfile.mkdtemp(), "student.keras")
student.save(path)
reloaded = keras.models.load_model(path)
digits = x_test[::100]  # the test split is ordered by class: one digit of each
np.testing.assert_allclose(reloaded.predict(digits, verbose=0), student.predict(digits, verbose=0), atol=1e-5)
print("reloaded student predicts:", reloaded.predict(digits, verbose=0).argmax(-1))
print("true labels:              ", y_test[::100])"""),
    ("md", """\
## Where to go next

- `python scripts/train_mnist.py --help`: the same run from the command line, with every output saved.
- `kdkeras.losses.available()`: other distillation losses (reverse KL, soft-target cross-entropy, logit MSE).
- The README: the formulas, the meaning of `alpha` and `temperature`, and measured results."""),
]


def build():
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for kind, source in CELLS:
        nb.cells.append(new_markdown_cell(source) if kind == "md" else new_code_cell(source))
    return nb


def execute(nb, timeout=1200):
    from nbclient import NotebookClient

    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": HERE}}).execute()
    return nb


_STARTUP_NOISE = ("absl::InitializeLog", "cuInit", "cuda_platform", "cudart_stub", "oneDNN custom operations",
                  "rebuild TensorFlow with the appropriate compiler flags", "cpu_feature_guard")


def drop_startup_noise(nb):
    """Removes TensorFlow's native start-up lines (CUDA probing on a CPU machine) from saved outputs.

    They come from C++ logging at import, are not controlled by the notebook, and
    differ between machines; nothing else is removed.
    """
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for out in cell.outputs:
            if out.output_type == "stream" and out.name == "stderr":
                lines = [l for l in out.text.splitlines(keepends=True) if not any(m in l for m in _STARTUP_NOISE)]
                if not "".join(lines).strip():
                    continue
                out.text = "".join(lines)
            kept.append(out)
        cell.outputs = kept
    return nb


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--no-execute", action="store_true", help="write the cells without running them")
    args = p.parse_args(argv)
    nb = build()
    if not args.no_execute:
        drop_startup_noise(execute(nb))
    nbformat.write(nb, NOTEBOOK)
    print(f"wrote {NOTEBOOK}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
