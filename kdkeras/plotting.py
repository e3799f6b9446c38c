"""Figures that show distillation at a glance: predictions, training curves, soft targets, a search.

Every function returns a ``matplotlib.figure.Figure`` and, given ``path``,
also writes it there atomically (to a temporary name, then renamed). They work
with the non-interactive Agg backend.
"""

import os

import numpy as np

from kdkeras.atomic import atomic_path

__all__ = ["plot_class_probabilities", "plot_predictions", "plot_history", "plot_next_token_distributions", "plot_soft_targets", "plot_trials", "save_figure"]

_OK = "#1a7f37"
_WRONG = "#cf222e"
_COLORS = ["#0969da", "#bc4c00", "#8250df", "#1a7f37", "#cf222e", "#57606a"]


def _figure(**kwargs):
    # Figure objects directly (not pyplot): no global state, no GUI backend needed.
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def save_figure(fig, path, dpi=120):
    """Saves ``fig`` to ``path`` atomically; the format follows the file extension."""
    ext = os.path.splitext(os.fspath(path))[1].lstrip(".").lower() or "png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=ext, dpi=dpi, bbox_inches="tight")
    return path


def _predict(model, x):
    return np.asarray(model.predict(x, verbose=0)).argmax(-1)


def plot_predictions(models, x, y, n=16, seed=0, mistakes_first=True, class_names=None, path=None):
    """A grid of test digits with the true label and each model's prediction.

    Correct predictions are green, wrong ones red and marked with a cross, so
    a reader sees at once where the student and the teacher disagree.

    Args:
        models: Mapping ``name -> model`` (or a single model), logits out.
        x: Images, shape ``(N, H, W[, C])``.
        y: True labels, shape ``(N,)``.
        n: Number of digits to show.
        seed: Which digits are drawn (repeatable).
        mistakes_first: Fill up to half of the grid with digits that at least
            one model gets wrong (they are the interesting ones).
        class_names: Optional names of the classes.
        path: Optional file to write the figure to.

    Returns:
        The ``matplotlib.figure.Figure``.
    """
    if not isinstance(models, dict):
        models = {getattr(models, "name", "model"): models}
    x, y = np.asarray(x), np.asarray(y).reshape(-1)
    if len(x) == 0:
        raise ValueError("plot_predictions needs at least one image; received 0.")
    n = min(int(n), len(x))
    preds = {name: _predict(m, x) for name, m in models.items()}
    rng = np.random.default_rng(seed)
    wrong = np.flatnonzero(np.any([p != y for p in preds.values()], axis=0))
    chosen = []
    if mistakes_first and len(wrong):
        chosen = list(rng.choice(wrong, size=min(len(wrong), n // 2), replace=False))
    rest = np.setdiff1d(np.arange(len(x)), chosen)
    chosen += list(rng.choice(rest, size=n - len(chosen), replace=False))
    chosen = sorted(int(i) for i in chosen)

    names = class_names or [str(c) for c in range(int(max(y.max(), *(p.max() for p in preds.values()))) + 1)]
    cols = min(8, n)
    rows = int(np.ceil(n / cols))
    line_h = 0.22
    fig = _figure(figsize=(1.55 * cols, (1.45 + line_h * (len(models) + 1)) * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, chosen):
        ax.imshow(x[i].squeeze(), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(f"true {names[y[i]]}", fontsize=9, fontweight="bold")
        for k, (name, p) in enumerate(preds.items()):
            ok = p[i] == y[i]
            ax.text(
                0.5, -0.08 - 0.17 * k,
                f"{name}: {names[p[i]]}" + ("" if ok else "  ✗"),
                transform=ax.transAxes, ha="center", va="top", fontsize=8,
                color=_OK if ok else _WRONG, fontweight="normal" if ok else "bold",
            )
        if any(p[i] != y[i] for p in preds.values()):
            for spine in ax.spines.values():
                spine.set_visible(True)
                spine.set_edgecolor(_WRONG)
                spine.set_linewidth(2)
            ax.axis("on")
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(
        "Sample test digits: true label and each model's prediction (red ✗ = wrong)",
        fontsize=11,
    )
    fig.subplots_adjust(hspace=0.35 + 0.2 * len(models))
    if path is not None:
        save_figure(fig, path)
    return fig


def _history_dict(history):
    return history.history if hasattr(history, "history") else dict(history)


def _find(hist, *candidates):
    for key in candidates:
        if key in hist:
            return key
    return None


def plot_history(histories, path=None):
    """Loss and accuracy per epoch for several runs on one figure.

    For a :class:`~kdkeras.Distiller` the loss panel shows its hard-label
    ``student_loss`` (cross-entropy), which is comparable across the
    teacher, the scratch student and the distilled student; the combined
    distillation objective is not.

    Args:
        histories: Mapping ``name -> keras History`` (or its ``.history`` dict).
        path: Optional file to write the figure to.

    Returns:
        The ``matplotlib.figure.Figure``.
    """
    if not histories:
        raise ValueError("plot_history needs at least one history; received none.")
    fig = _figure(figsize=(11, 4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    late_accuracies = []  # accuracies after the first 10 % of epochs: they set the zoom of the panel
    hists = {name: _history_dict(history) for name, history in histories.items()}
    longest = max((len(v) for hist in hists.values() for v in hist.values()), default=0)
    marker = dict(marker="o", ms=3) if longest <= 30 else {}  # markers crowd long runs
    for color, (name, hist) in zip(_COLORS * 4, hists.items()):
        for prefix, style, label in (("", "-", "train"), ("val_", "--", "val")):
            loss_key = _find(hist, prefix + "student_loss", prefix + "loss")
            acc_key = next(
                (k for k in hist if k.startswith(prefix) and k.endswith("accuracy")
                 and (prefix or not k.startswith("val_"))), None)
            if loss_key:
                epochs = np.arange(1, len(hist[loss_key]) + 1)
                ax_loss.plot(epochs, hist[loss_key], style, color=color, label=f"{name} ({label})", **marker)
            if acc_key:
                values = np.asarray(hist[acc_key], dtype=float)
                epochs = np.arange(1, len(values) + 1)
                ax_acc.plot(epochs, values, style, color=color, label=f"{name} ({label})", **marker)
                late_accuracies.extend(values[len(values) // 10:])
    ax_loss.set(title="Hard-label cross-entropy", xlabel="epoch", ylabel="loss")
    ax_acc.set(title="Accuracy", xlabel="epoch", ylabel="accuracy")
    finite = [v for v in late_accuracies if np.isfinite(v)]
    if longest > 30 and finite:  # zoom in on where the runs end; the first epochs go off the bottom
        low, high = min(finite), max(finite)
        pad = max(0.005, 0.1 * (high - low))
        ax_acc.set_ylim(max(0.0, low - pad), min(1.0, high) + pad)
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle("Training curves (solid: training set, dashed: validation = test split)", fontsize=11)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


def plot_soft_targets(teacher, x, temperatures=(1, 3, 10), index=0, class_names=None, path=None):
    """How temperature softens the teacher's distribution for one example.

    At ``T = 1`` the teacher is nearly certain; at higher ``T`` the small
    probabilities it gives the other classes (which digits this one
    resembles) become visible: the "dark knowledge" the student learns from.

    Args:
        teacher: Model that outputs logits.
        x: Images; ``x[index]`` is shown.
        temperatures: Temperatures to compare.
        index: Which image.
        class_names: Optional names of the classes.
        path: Optional file to write the figure to.

    Returns:
        The ``matplotlib.figure.Figure``.
    """
    temperatures = tuple(temperatures)
    if not temperatures or any(float(t) <= 0 for t in temperatures):
        raise ValueError(f"temperatures must be positive numbers; received {temperatures!r}.")
    x = np.asarray(x)
    logits = np.asarray(teacher.predict(x[index : index + 1], verbose=0), np.float64)[0]
    names = class_names or [str(c) for c in range(len(logits))]
    fig = _figure(figsize=(3 + 3.2 * len(temperatures), 3.2))
    axes = fig.subplots(1, len(temperatures) + 1, gridspec_kw={"width_ratios": [0.8] + [1] * len(temperatures)})
    axes[0].imshow(x[index].squeeze(), cmap="gray_r")
    axes[0].set_title(f"input (teacher says {names[int(logits.argmax())]})", fontsize=9)
    axes[0].axis("off")
    for ax, t, color in zip(axes[1:], temperatures, _COLORS):
        z = logits / float(t)
        p = np.exp(z - z.max())
        p /= p.sum()
        ax.bar(np.arange(len(p)), p, color=color)
        ax.set_xticks(np.arange(len(p)), names)
        ax.set_ylim(0, 1)
        ax.set_title(f"T = {t:g}", fontsize=10)
        ax.set_xlabel("class")
        ax.grid(axis="y", alpha=0.3)
        runner_up = np.argsort(p)[-2]
        ax.text(runner_up, p[runner_up] + 0.03, f"{p[runner_up]:.2f}", ha="center", fontsize=8)
    axes[1].set_ylabel("softmax(z / T)")
    fig.suptitle("Teacher soft targets: higher temperature reveals which other digits it resembles", fontsize=11)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


def plot_trials(rows, objective="val_accuracy", path=None):
    """The trials of a search, one bar each (best at the top), labelled with their settings.

    Args:
        rows: Trial dicts as :func:`kdkeras.tuning.trial_table` returns them
            (settings and ``objective``); trials without a value are left out.
        objective: The key of the score.
        path: Optional file to write the figure to.

    Returns:
        The ``matplotlib.figure.Figure``.
    """
    scored = sorted((r for r in rows if r.get(objective) is not None), key=lambda r: -r[objective])
    if not scored:
        raise ValueError(f"plot_trials needs at least one trial with a {objective!r} value.")
    settings = [k for k in ("temperature", "alpha", "loss", "learning_rate") if k in scored[0]]
    labels = [", ".join(f"{_SHORT.get(k, k)}={r[k]:g}" if isinstance(r[k], float) else f"{r[k]}" for k in settings)
              for r in scored]
    values = np.array([r[objective] for r in scored])
    fig = _figure(figsize=(8, 1.2 + 0.32 * len(scored)))
    ax = fig.subplots()
    positions = np.arange(len(scored))[::-1]
    ax.barh(positions, values, color=[_OK] + [_COLORS[0]] * (len(scored) - 1))
    ax.set_yticks(positions, labels, fontsize=8)
    low, high = float(values.min()), float(values.max())
    pad = max(0.005, 0.15 * (high - low))
    ax.set_xlim(max(0.0, low - pad), min(1.0, high + pad))
    for y, v in zip(positions, values):
        ax.text(v, y, f" {v:.4f}", va="center", fontsize=8)
    ax.set(xlabel=objective.replace("_", " "), title=f"{len(scored)} trials (green: chosen)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


_SHORT = {"temperature": "T", "alpha": "alpha", "learning_rate": "lr"}


def _grouped_bars(ax, probabilities, order):
    """One bar per model side by side at each of the entries ``order`` of its probabilities."""
    width = 0.8 / len(probabilities)
    for k, (color, (name, p)) in enumerate(zip(_COLORS * 4, probabilities.items())):
        ax.bar(np.arange(len(order)) + (k - (len(probabilities) - 1) / 2) * width, p[order], width, color=color,
               label=name)


def plot_next_token_distributions(models, prompt_ids, decode, top=15, temperature=1.0, path=None):
    """Each language model's distribution of the next token after one prompt, as bars side by side.

    The tokens shown are the ``top`` most likely under the first model (the
    teacher); a student that learnt from its soft targets puts its mass in
    the same places.

    Args:
        models: Mapping ``name -> model`` (``[batch, steps]`` ids to ``[batch, steps, vocab]`` logits).
        prompt_ids: The prompt's token ids (1-D).
        decode: ``f([id]) -> str`` naming a token (a character tokenizer's ``decode``).
        top: How many tokens to show.
        temperature: Softmax temperature of the distributions.
        path: Optional file to write the figure to.

    Returns:
        The ``matplotlib.figure.Figure``.
    """
    if not models:
        raise ValueError("plot_next_token_distributions needs at least one model.")
    prompt = np.asarray(prompt_ids, dtype=np.int32)[None, :]
    probabilities = {}
    for name, model in models.items():
        logits = np.asarray(model(prompt, training=False))[0, -1].astype(np.float64) / temperature
        p = np.exp(logits - logits.max())
        probabilities[name] = p / p.sum()
    first = next(iter(probabilities.values()))
    order = np.argsort(-first)[:top]
    labels = [repr(decode([int(i)]))[1:-1].replace("\\n", "⏎").replace(" ", "␣") or "?" for i in order]
    fig = _figure(figsize=(11, 4))
    ax = fig.subplots()
    _grouped_bars(ax, probabilities, order)
    ax.set_xticks(np.arange(len(order)), labels)
    ax.set(ylabel="probability", xlabel=f"next character (the {top} most likely under {next(iter(models))})")
    ax.legend(fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


def plot_class_probabilities(examples, top=5, path=None):
    """Each model's class probabilities on a few passages: one panel per passage, bars side by side.

    The classes shown are the first model's (the teacher's) ``top`` most likely
    and the true class; its tick is bold.

    Args:
        examples: ``[{"label": true class name, "classes": [class names], "probabilities": {model name:
            [p per class]}}]`` (:func:`kdkeras.text.classifier.probabilities` with ``classes`` added).
        top: How many of the first model's classes to show.
        path: Optional file to write the figure to.

    Returns:
        The ``matplotlib.figure.Figure``.
    """
    if not examples:
        raise ValueError("plot_class_probabilities needs at least one example.")
    fig = _figure(figsize=(11, 2.8 * len(examples)))
    axes = np.atleast_1d(fig.subplots(len(examples), 1))
    for ax, ex in zip(axes, examples):
        probabilities = {name: np.asarray(p, np.float64) for name, p in ex["probabilities"].items()}
        classes = ex["classes"]
        first = next(iter(probabilities.values()))
        order = list(np.argsort(-first)[:top])
        truth = classes.index(ex["label"])
        if truth not in order:
            order.append(truth)
        _grouped_bars(ax, probabilities, order)
        ax.set_xticks(np.arange(len(order)), [classes[i] for i in order], fontsize=8)
        for tick, i in zip(ax.get_xticklabels(), order):
            tick.set_fontweight("bold" if i == truth else "normal")
        ax.set(ylabel="probability", ylim=(0, 1))
        ax.set_title(f"true: {ex['label']} (bold)", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8, ncol=min(len(probabilities), 3))
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig
