"""Figures and the comparison numbers."""

import matplotlib
import numpy as np
import pytest
from helpers.shared import log_softmax_np

import kdkeras
from kdkeras import evaluation, plotting

matplotlib.use("Agg")


def test_macro_f1_against_hand_computed_value():
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0])
    # class 0: tp1 fp1 fn1 -> 0.5; class 1: tp2 fp1 fn0 -> 0.8; class 2: tp1 fp0 fn1 -> 2/3
    assert evaluation.macro_f1(y_true, y_pred, 3) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


def test_compare_numbers(trained_teacher, sample_arrays):
    _, (x, y) = sample_arrays
    x, y = x[:300], y[:300]
    student = kdkeras.build_student(seed=0)
    metrics = evaluation.compare({"teacher": trained_teacher, "student": student}, (x, y),
                                 teacher=trained_teacher, latency_repeats=5)
    zt = trained_teacher.predict(x, verbose=0)
    zs = student.predict(x, verbose=0)
    assert metrics["teacher"]["accuracy"] == pytest.approx(np.mean(zt.argmax(-1) == y))
    assert "agreement" not in metrics["teacher"]
    s = metrics["student"]
    assert s["agreement"] == pytest.approx(np.mean(zs.argmax(-1) == zt.argmax(-1)))
    kl = (np.exp(log_softmax_np(zt)) * (log_softmax_np(zt) - log_softmax_np(zs))).sum(-1).mean()
    assert s["mean_kl_to_teacher"] == pytest.approx(kl, rel=1e-4)
    assert s["parameters"] == 87_050
    assert metrics["teacher"]["bytes_on_disk"] > 2 * s["bytes_on_disk"]
    table = evaluation.format_table(metrics)
    assert table.count("\n") == 3 and "| student |" in table and "87,050" in table


def test_size_on_disk_leaves_out_optimizer_state(sample_arrays):
    (x, y), _ = sample_arrays
    trained = kdkeras.build_student(seed=0)
    trained.compile("adam", "sparse_categorical_crossentropy")
    trained.fit(x[:64], y[:64], epochs=1, verbose=0)  # Adam now holds two slots per weight
    bare = kdkeras.build_student(seed=1)
    sizes = evaluation.compare({"trained": trained, "bare": bare}, (x[:32], y[:32]), latency_repeats=1)
    # Same architecture, same weight count: the sizes match to the zip's few hundred bytes of
    # metadata, while Adam's state alone would add about 2 x 87,050 x 4 bytes = 680 kB.
    assert abs(sizes["trained"]["bytes_on_disk"] - sizes["bare"]["bytes_on_disk"]) < 20_000


def test_compare_rejects_empty_input(trained_teacher):
    with pytest.raises(ValueError, match="empty"):
        evaluation.compare({"t": trained_teacher}, (np.zeros((0, 28, 28, 1)), np.zeros(0)))


def test_plot_predictions_marks_mistakes(trained_teacher, sample_arrays, tmp_path):
    _, (x, y) = sample_arrays
    student = kdkeras.build_student(seed=0)  # untrained: mostly wrong
    fig = plotting.plot_predictions({"teacher": trained_teacher, "student": student}, x[:200], y[:200],
                                    n=16, path=tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 10_000
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 16
    predictions = {name: np.argmax(m.predict(x[:200], verbose=0), -1)
                   for name, m in (("teacher", trained_teacher), ("student", student))}
    images = x[:200].reshape(200, -1)
    marks = 0
    for ax in shown:
        # Which digit the panel shows, found from its pixels; then every line is checked against NumPy.
        i = int(np.argmin(np.abs(images - np.asarray(ax.images[0].get_array()).reshape(1, -1)).sum(-1)))
        assert ax.get_title() == f"true {y[i]}"
        for text in ax.texts:
            name, shown_pred = text.get_text().replace("✗", "").split(":")
            assert int(shown_pred) == predictions[name.strip()][i]
            wrong = predictions[name.strip()][i] != y[i]
            assert ("✗" in text.get_text()) == wrong, (text.get_text(), y[i])
            marks += wrong
    assert marks >= 8  # mistakes first: up to half the grid shows digits some model gets wrong


def test_plot_history_and_soft_targets(trained_teacher, sample_arrays, tmp_path):
    _, (x, _) = sample_arrays
    hist = {"teacher": {"loss": [1.0, 0.5], "accuracy": [0.7, 0.9], "val_loss": [0.8, 0.6], "val_accuracy": [0.8, 0.85]},
            "distilled": {"loss": [5.0, 2.0], "student_loss": [1.2, 0.6], "accuracy": [0.6, 0.8]}}
    fig = plotting.plot_history(hist, path=tmp_path / "h.png")
    loss_ax = fig.axes[0]
    plotted = {line.get_label(): list(line.get_ydata()) for line in loss_ax.lines}
    assert plotted["distilled (train)"] == [1.2, 0.6]  # hard-label loss, not the combined one
    assert (tmp_path / "h.png").exists()
    fig = plotting.plot_soft_targets(trained_teacher, x, temperatures=(1, 4, 10), path=tmp_path / "s.png")
    heights = [np.array([p.get_height() for p in ax.patches]) for ax in fig.axes[1:]]
    assert all(h.sum() == pytest.approx(1.0, abs=1e-6) for h in heights)
    assert heights[0].max() > heights[1].max() > heights[2].max()  # higher T is softer
    with pytest.raises(ValueError, match="-1"):
        plotting.plot_soft_targets(trained_teacher, x, temperatures=(1, -1))


def test_long_histories_zoom_the_accuracy_panel_and_drop_markers():
    from kdkeras import plotting

    epochs = 100
    rising = list(np.linspace(0.5, 0.97, 10)) + [0.97 + 0.01 * (i % 2) for i in range(epochs - 10)]
    hist = {"accuracy": rising, "loss": list(np.linspace(2.0, 0.1, epochs)),
            "val_accuracy": [a - 0.01 for a in rising]}
    fig = plotting.plot_history({"a": hist, "b": dict(hist)})
    ax_loss, ax_acc = fig.axes[:2]
    low, high = ax_acc.get_ylim()
    assert 0.9 < low < 0.96 and 0.98 <= high <= 1.01  # the ends are readable, the first epochs are cut
    assert all(line.get_marker() in (None, "None", "") for line in ax_acc.get_lines())
    short = plotting.plot_history({"a": {k: v[:10] for k, v in hist.items()}})
    assert short.axes[1].get_ylim()[0] < 0.55  # short runs are shown whole, with markers
    assert short.axes[1].get_lines()[0].get_marker() == "o"
