"""Writes ``text_distillation.ipynb`` from the cells below and executes it in place.

The language-model twin of ``mnist_distillation.ipynb``: a character-level GPT
teacher on Shakespeare, a student eight times smaller trained from scratch and
distilled, the next-character soft targets of one prompt, and samples. Saved
with the outputs of a real run on the bundled eight plays::

    python notebooks/build_text_notebook.py             # write + execute (a few minutes on 2 CPUs)
    python notebooks/build_text_notebook.py --no-execute

The tests execute it with tiny budgets (``KDKERAS_NB_TEACHER_STEPS``,
``KDKERAS_NB_STUDENT_STEPS``) and fail on any cell error.
"""

import argparse
import os
import sys

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = os.path.dirname(os.path.abspath(__file__))
NOTEBOOK = os.path.join(HERE, "text_distillation.ipynb")

CELLS = [
    ("md", """\
# Distilling a Shakespeare language model with kdkeras

A *teacher* language model reads characters and predicts the next one. A student with an eighth of its
parameters is then trained twice on the same batches from the same initial weights: once on the next
character alone (the scratch student), once on the teacher's whole distribution over the next character
(the distilled student, forward KL per token). Held-out text is whole plays the models never saw, and
quality is bits per character (lower is better).

It runs offline on the eight plays bundled with kdkeras; `scripts/train_text.py` is the same story as a
command, with the results on all 38 plays in the README."""),
    ("md", "## Parameters\n\nThe budgets can be overridden from the environment (the tests run this notebook with tiny ones)."),
    ("code", """\
import os

TEACHER_STEPS = int(os.environ.get("KDKERAS_NB_TEACHER_STEPS", 2000))
STUDENT_STEPS = int(os.environ.get("KDKERAS_NB_STUDENT_STEPS", 800))
SEED = 0"""),
    ("code", """\
%matplotlib inline
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras
import numpy as np
import tensorflow as tf

import kdkeras
from kdkeras import plotting, text
from kdkeras.text import experiment

tf.get_logger().setLevel("ERROR")
keras.utils.set_random_seed(SEED)"""),
    ("md", "## The text\n\nWhole plays are held out: the last but one for validation, the last for test."),
    ("code", """\
recipe = experiment.TextRecipe(teacher_steps=TEACHER_STEPS, student_steps=STUDENT_STEPS, epoch_steps=200, seed=SEED)
data = experiment.prepare(text.load_corpus("sample"), recipe)
for split in ("train", "validation", "test"):
    print(f"{split:>10}: {data.characters[split]:>8,} characters  {', '.join(data.documents[split])}")
print(f"{data.vocabulary.size} character ids; windows of {recipe.context} characters, batches of {recipe.batch_size}")"""),
    ("md", "## The teacher\n\nA GPT with two blocks of width 128, trained on the next character."),
    ("code", """\
teacher = experiment.teacher_model(data, recipe)
print(f"teacher: {teacher.count_params():,} parameters")
teacher = experiment.train_language_model("teacher", teacher, data.train, recipe.teacher_steps, recipe).model"""),
    ("md", "## The student, from scratch and distilled\n\nOne block of width 48; both start from the same weights and see the same batches."),
    ("code", """\
scratch = experiment.train_language_model("scratch", experiment.student_model(data, recipe), data.train,
                                          recipe.student_steps, recipe).model
distilled = experiment.distil(experiment.student_model(data, recipe), teacher, data.train, recipe).model
print(f"student: {distilled.count_params():,} parameters")"""),
    ("md", "## Held-out plays\n\nBits per character on the test play, and how closely each student follows the teacher."),
    ("code", """\
rows = []
for name, model in (("teacher", teacher), ("student (scratch)", scratch), ("student (distilled)", distilled)):
    m = experiment.evaluate(model, data.test, teacher=None if name == "teacher" else teacher)
    kl, agree = (f"{m[k]:.3f}" if k in m else "—" for k in ("kl_to_teacher", "agreement"))
    rows.append(f"| {name} | {m['bits_per_character']:.3f} | {kl} | {agree} |")
print("| model | test bits / character | KL to teacher | agreement |\\n|---|---:|---:|---:|")
print("\\n".join(rows))"""),
    ("md", "## The soft targets of the next character\n\nAfter one prompt from the test play: the teacher's distribution over the next character, and each student's."),
    ("code", """\
prompt = "ROMEO:\\nBut, soft! what light through yonder window b"
ids = data.vocabulary.encode(prompt)
plotting.plot_next_token_distributions(
    {"teacher": teacher, "student (distilled)": distilled, "student (scratch)": scratch}, ids,
    data.vocabulary.decode, top=15)"""),
    ("md", "## Samples\n\nThe same prompt continued by each model, with the same random numbers (temperature 0.8)."),
    ("code", """\
for name, model in (("teacher", teacher), ("student (distilled)", distilled), ("student (scratch)", scratch)):
    continuation = text.generate(model, [ids], 120, recipe.context, temperature=0.8, seed=SEED)[0]
    print(f"--- {name}\\n{prompt}{data.vocabulary.decode(continuation)}\\n")"""),
]


def build():
    nb = new_notebook()
    nb.cells = [new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--no-execute", action="store_true")
    args = p.parse_args(argv)
    nb = build()
    if not args.no_execute:
        from nbclient import NotebookClient

        NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": HERE}}).execute()
    nbformat.write(nb, NOTEBOOK)
    print(f"wrote {NOTEBOOK}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
