"""Metrics, as sums over examples so that batches and devices add up exactly.

A metrics dict maps a name to a float32 sum plus a "count"; `add` adds two such dicts and `means`
divides once at the end, on the host, so an epoch's accuracy is exact whatever the batch size or
padding. Entries need not be scalars: a (K, K) "confusion" matrix or the (L,) per-label counts of
a multi-label task add up the same way, and `summarize` turns them into reports on the host.

The `*_sums` functions are jit-traceable (static shapes, `mask` = 0 on padding rows); the
`*_report` functions and `summarize` run on the host with NumPy and return plain floats.
"""

import os
import re
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike


def _mask(mask: jax.Array | None, n: int) -> jax.Array:
    return jnp.ones((n,), jnp.float32) if mask is None else mask.astype(jnp.float32)


def classification_sums(
    logits: jax.Array, labels: jax.Array, loss: jax.Array, mask: jax.Array | None = None
) -> dict[str, jax.Array]:
    """Sums of loss, top-1 and (for more than 5 classes) top-5 correctness over unmasked rows."""
    mask = _mask(mask, labels.shape[0])
    logits = logits.astype(jnp.float32)
    # Rank of the true class = number of classes with a strictly larger logit.
    true_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)
    rank = jnp.sum(logits > true_logit, axis=-1)
    sums = {
        "loss": jnp.sum(loss * mask),
        "accuracy": jnp.sum((rank < 1) * mask),
        "count": jnp.sum(mask),
    }
    if logits.shape[-1] > 5:
        sums["top5_accuracy"] = jnp.sum((rank < 5) * mask)
    return sums


def confusion_sums(
    logits: jax.Array, labels: jax.Array, mask: jax.Array | None = None
) -> jax.Array:
    """(K, K) float32 counts of unmasked rows: row = true class, column = argmax prediction.

    Counts are exact in float32 up to 2^24 per cell. Ties go to the lowest class index, whereas
    `classification_sums` counts a tie with the true class as correct.
    """
    num_classes = logits.shape[-1]
    mask = _mask(mask, labels.shape[0])
    true = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32) * mask[:, None]
    pred = jax.nn.one_hot(jnp.argmax(logits, axis=-1), num_classes, dtype=jnp.float32)
    # HIGHEST: 0/1 operands are exact at any precision, but this keeps the float32 accumulation.
    return jnp.matmul(true.T, pred, precision=jax.lax.Precision.HIGHEST)


def multilabel_sums(
    logits: jax.Array, targets: jax.Array, mask: jax.Array | None = None
) -> dict[str, jax.Array]:
    """Per-label (L,) true/false positive/negative counts at logit 0 (probability 0.5), the
    number of exactly matched rows ("exact_match") and "count" of unmasked rows."""
    mask = _mask(mask, targets.shape[0])
    pred = logits > 0
    true = targets > 0.5
    m = mask[:, None]

    def count(x):
        return jnp.sum(x.astype(jnp.float32) * m, axis=0)

    exact = jnp.all(pred == true, axis=-1).astype(jnp.float32)
    return {
        "tp": count(pred & true),
        "fp": count(pred & ~true),
        "fn": count(~pred & true),
        "tn": count(~pred & ~true),
        "exact_match": jnp.sum(exact * mask),
        "count": jnp.sum(mask),
    }


def regression_sums(
    pred: jax.Array, target: jax.Array, mask: jax.Array | None = None
) -> dict[str, jax.Array]:
    """Sums over unmasked rows of each example's mean squared ("mse") and absolute ("mae")
    error over its outputs, and "count"; `means` gives MSE and MAE, `summarize` adds RMSE."""
    mask = _mask(mask, pred.shape[0])
    diff = (pred.astype(jnp.float32) - target.astype(jnp.float32)).reshape(pred.shape[0], -1)
    return {
        "mse": jnp.sum(jnp.mean(jnp.square(diff), axis=-1) * mask),
        "mae": jnp.sum(jnp.mean(jnp.abs(diff), axis=-1) * mask),
        "count": jnp.sum(mask),
    }


def add(a: dict[str, jax.Array] | None, b: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Adds two metric-sum dicts (None acts as zero)."""
    return b if a is None else jax.tree.map(jnp.add, a, b)


def means(sums: dict, prefix: str) -> dict[str, float]:
    """Host-side means of the scalar sums, named "<prefix>/<metric>" (arrays are skipped)."""
    sums = jax.device_get(sums)
    count = float(sums["count"])
    return {
        f"{prefix}/{k}": float(v) / count
        for k, v in sums.items()
        if k != "count" and np.ndim(v) == 0
    }


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, with 0 where den is 0 (scikit-learn's zero_division=0)."""
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def _key(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", str(name))


def _names(n: int, names: Sequence[str] | None) -> list[str]:
    return [str(k) for k in range(n)] if names is None else [_key(s) for s in names]


def classification_report(
    confusion: ArrayLike, class_names: Sequence[str] | None = None
) -> dict[str, float]:
    """Accuracy, precision / recall / F1 (micro, macro, weighted), balanced accuracy and
    per-class accuracy (= recall) of a (K, K) confusion matrix (rows = true class).

    Conventions follow scikit-learn: a zero denominator gives 0; macro averages run over the
    classes that occur as a true or predicted label; weighted averages weight by support;
    balanced accuracy is the mean recall over classes with support (Brodersen et al. 2010).
    """
    c = np.asarray(confusion, np.float64)
    tp = np.diag(c)
    support, predicted = c.sum(axis=1), c.sum(axis=0)
    precision, recall = _ratio(tp, predicted), _ratio(tp, support)
    f1 = _ratio(2 * tp, support + predicted)
    present = (support + predicted) > 0
    report = {"accuracy": float(_ratio(tp.sum(), c.sum()))}
    # Single-label: micro precision = micro recall = micro F1 = accuracy.
    for name in ("precision", "recall", "f1"):
        report[f"{name}_micro"] = report["accuracy"]
    for name, values in (("precision", precision), ("recall", recall), ("f1", f1)):
        report[f"{name}_macro"] = float(values[present].mean()) if present.any() else 0.0
        report[f"{name}_weighted"] = float(_ratio((values * support).sum(), support.sum()))
    has_support = support > 0
    report["balanced_accuracy"] = float(recall[has_support].mean()) if has_support.any() else 0.0
    for name, value in zip(_names(len(c), class_names), recall, strict=True):
        report[f"per_class_accuracy/{name}"] = float(value)
    return report


def multilabel_report(sums: dict, label_names: Sequence[str] | None = None) -> dict[str, float]:
    """Per-label precision / recall / F1 / accuracy, their micro and macro averages, Hamming
    accuracy (1 - Hamming loss) and exact-match (subset) accuracy, from `multilabel_sums`.

    Macro averages run over all L labels (scikit-learn's multi-label convention; 0 where a
    denominator is 0).
    """
    tp, fp, fn, tn = (np.asarray(sums[k], np.float64) for k in ("tp", "fp", "fn", "tn"))
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    accuracy = _ratio(tp + tn, tp + fp + fn + tn)
    report = {
        "precision_micro": float(_ratio(tp.sum(), (tp + fp).sum())),
        "recall_micro": float(_ratio(tp.sum(), (tp + fn).sum())),
        "f1_micro": float(_ratio(2 * tp.sum(), (2 * tp + fp + fn).sum())),
        "precision_macro": float(precision.mean()),
        "recall_macro": float(recall.mean()),
        "f1_macro": float(f1.mean()),
        "hamming_accuracy": float(_ratio((tp + tn).sum(), (tp + fp + fn + tn).sum())),
    }
    if "exact_match" in sums:
        report["exact_match"] = float(_ratio(sums["exact_match"], sums["count"]))
    names = _names(len(tp), label_names)
    for metric, values in (
        ("precision", precision),
        ("recall", recall),
        ("f1", f1),
        ("accuracy", accuracy),
    ):
        for name, value in zip(names, values, strict=True):
            report[f"per_label_{metric}/{name}"] = float(value)
    return report


def shot_accuracy(
    confusion: ArrayLike, train_counts: ArrayLike, many: int = 100, few: int = 20
) -> dict[str, float]:
    """Long-tail accuracy by class frequency (Liu et al. 2019, Sec. 5; Kang et al. 2020): the
    mean per-class accuracy over many-shot (> `many` training images), medium-shot and few-shot
    (< `few`) classes. Classes without test examples and empty groups are left out."""
    c = np.asarray(confusion, np.float64)
    counts = np.asarray(train_counts)
    if counts.shape != (len(c),):
        raise ValueError(f"train_counts has shape {counts.shape}, expected ({len(c)},)")
    support = c.sum(axis=1)
    recall = _ratio(np.diag(c), support)
    groups = {
        "many_shot_accuracy": counts > many,
        "medium_shot_accuracy": (counts >= few) & (counts <= many),
        "few_shot_accuracy": counts < few,
    }
    return {
        name: float(recall[group & (support > 0)].mean())
        for name, group in groups.items()
        if (group & (support > 0)).any()
    }


def summarize(
    sums: dict,
    prefix: str,
    class_names: Sequence[str] | None = None,
    train_counts: ArrayLike | None = None,
    label_names: Sequence[str] | None = None,
) -> dict[str, float]:
    """All host-side metrics of a sums dict, named "<prefix>/<metric>": the `means`, then the
    `classification_report` (and, with `train_counts`, `shot_accuracy`) of a "confusion" entry,
    the `multilabel_report` of per-label counts, and "rmse" next to "mse". Where a report and a
    mean share a name (accuracy, exact_match), the mean is kept."""
    sums = jax.device_get(sums)
    report: dict[str, float] = {}
    if "confusion" in sums:
        report.update(classification_report(sums["confusion"], class_names))
        if train_counts is not None:
            report.update(shot_accuracy(sums["confusion"], train_counts))
    if "tp" in sums:
        report.update(multilabel_report(sums, label_names))
    result = {f"{prefix}/{k}": v for k, v in report.items()}
    result.update(means(sums, prefix))
    if "mse" in sums:
        result[f"{prefix}/rmse"] = float(np.sqrt(result[f"{prefix}/mse"]))
    return result


def plot_confusion(
    confusion: ArrayLike,
    path: str,
    class_names: Sequence[str] | None = None,
    normalize: bool = True,
) -> str:
    """Writes the confusion matrix as a PNG (rows = true class) and returns `path`.

    With `normalize`, each row is divided by its support (the diagonal is per-class recall).
    Cells carry their values when there are at most 20 classes. Drawn on a `Figure` with an
    Agg canvas, never through pyplot, so no global matplotlib state is touched.
    """
    # Imported here: matplotlib is slow to import and only needed when a report is written.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    c = np.asarray(confusion, np.float64)
    k = len(c)
    values = _ratio(c, c.sum(axis=1, keepdims=True)) if normalize else c
    names = [str(k) for k in range(k)] if class_names is None else [str(s) for s in class_names]
    size = min(4.0 + 0.4 * k, 20.0)
    fig = Figure(figsize=(size + 1.0, size), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("confusion matrix" + (" (rows normalized)" if normalize else ""))
    if k <= 50:
        ax.set_xticks(range(k), names, rotation=90 if k > 10 else 0)
        ax.set_yticks(range(k), names)
    if k <= 20:
        threshold = values.max() / 2 if values.size else 0.0
        for i in range(k):
            for j in range(k):
                text = f"{values[i, j]:.2f}" if normalize else f"{int(round(values[i, j]))}"
                color = "white" if values[i, j] > threshold else "black"
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color=color)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, format="png", bbox_inches="tight")
    return path
