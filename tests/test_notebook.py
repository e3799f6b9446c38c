"""notebooks/mnist_distillation.ipynb: executes without a cell error, and its saved outputs are real."""

import os

import nbformat
import pytest

from helpers.shared import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "notebooks", "mnist_distillation.ipynb")


def _load():
    return nbformat.read(NOTEBOOK, as_version=4)


def test_saved_notebook_has_outputs_of_a_real_run():
    nb = _load()
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.get("execution_count") for c in code), "notebook saved without running every cell"
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3, "soft targets, predictions and history figures should be saved in the notebook"
    text = "".join(o.get("text", "") for o in outputs)
    assert "student (distilled)" in text and "accuracy" in text.lower()


def _execute(nb, path, monkeypatch, **env):
    """Runs every cell of ``nb`` in ``path`` with ``env`` set (the kernel inherits it); returns the outputs."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    try:
        NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path)}}).execute()
    except CellExecutionError as e:  # pragma: no cover - the failure message is the point
        pytest.fail(f"a notebook cell failed:\n{str(e)[-3000:]}")
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    return outputs


def test_notebook_executes_without_errors(tmp_path, monkeypatch):
    outputs = _execute(_load(), tmp_path, monkeypatch, KDKERAS_NB_TEACHER_EPOCHS="1", KDKERAS_NB_STUDENT_EPOCHS="1")
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3
    # The run used the small epochs: one epoch line per fit (teacher, scratch, distiller), no "Epoch 2/".
    log = "".join(o.get("text", "") for o in outputs)
    assert log.count("63/63 - ") == 3 and "Epoch 2/" not in log, log[:2000]


def test_saved_notebook_is_what_the_builder_writes_and_names_the_current_defaults():
    """The saved cells are build_notebook.py's cells, and what they say of the main job's defaults is true."""
    import re

    import kdkeras

    builder = load_script("notebooks/build_notebook.py")
    saved = [c.source for c in _load().cells]
    assert saved == [source for _, source in builder.CELLS]
    claims = re.findall(r"kdkeras\.Recipe\(\) \(T = ([\d.]+), alpha = ([\d.]+)\)", "\n".join(saved))
    recipe = kdkeras.Recipe()
    assert claims and all((float(t), float(a)) == (recipe.temperature, recipe.alpha) for t, a in claims)


TEXT_NOTEBOOK = os.path.join(ROOT, "notebooks", "text_distillation.ipynb")


def test_the_text_notebook_is_saved_with_a_real_run_and_is_what_its_builder_writes():
    nb = nbformat.read(TEXT_NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.get("execution_count") for c in code)
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "the soft-target figure is saved"
    log = "".join(o.get("text", "") for o in outputs)
    assert "student (distilled)" in log and "test bits / character" in log
    builder = load_script("notebooks/build_text_notebook.py")
    assert [c.source for c in nb.cells] == [source for _, source in builder.CELLS]


@pytest.mark.slow
def test_the_text_notebook_executes_without_errors(tmp_path, monkeypatch):
    outputs = _execute(nbformat.read(TEXT_NOTEBOOK, as_version=4), tmp_path, monkeypatch,
                       KDKERAS_NB_TEACHER_STEPS="20", KDKERAS_NB_STUDENT_STEPS="20")
    assert any("image/png" in o.get("data", {}) for o in outputs)
    log = "".join(o.get("text", "") for o in outputs)
    assert "20/20 - " in log and "Epoch 2/" not in log, log[:2000]  # the tiny budget: one epoch of 20 steps
