"""What a run learns: the targets, the loss and the metrics, built once from the config.

A `Task` is static data (hashable), so the jitted steps close over it. Five kinds share one
engine, one model (its "head" gives `num_outputs` values) and one data pipeline (integer labels):

- "classification": softmax cross-entropy, focal or LDAM loss; class-balanced weights, deferred
  re-weighting (DRW), cosine ("normed") logits; confusion-matrix metrics.
- "multilabel": sigmoid BCE on multi-hot targets, per-label metrics. The targets are rows of
  `targets` (one row per class label), e.g. attributes of a digit.
- "regression": L2 or Huber loss on the values `targets[label]` (default: the label itself).
- "multitask": several classification heads as slices of one head, on a shared backbone; head
  t's label is `targets[label][t]`.
- "embedding": the head's output is an embedding, trained with a batch-hard triplet or a
  contrastive loss (Siamese training on the labels' same/different pairs); evaluated by 1-NN.
"""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cvjax import losses, metrics
from cvjax.errors import UserError

KINDS = ("classification", "multilabel", "regression", "multitask", "embedding")
CLASSIFICATION_LOSSES = ("softmax_ce", "focal", "ldam")


@dataclasses.dataclass(frozen=True)
class Task:
    kind: str = "classification"
    num_classes: int = 10  # Classes of the dataset's integer labels.
    num_outputs: int = 10  # Width of the model's head.
    loss: str = "softmax_ce"
    label_smoothing: float = 0.0
    focal_gamma: float = 2.0
    class_weights: tuple[float, ...] | None = None  # Per-class loss weights (from step 0).
    drw_weights: tuple[float, ...] | None = None  # Class weights from epoch `drw_epoch` on.
    drw_epoch: int = 0
    ldam_margins: tuple[float, ...] | None = None
    ldam_scale: float = 30.0
    normed_head: bool = False  # Cosine logits: normalized features times normalized weights.
    targets: tuple[tuple[float, ...], ...] | None = None  # Per-label target rows.
    heads: tuple[tuple[str, int], ...] = ()  # Multitask: (name, classes) per head.
    huber_delta: float = 0.0  # Regression: 0 is the L2 loss.
    embedding_loss: str = "triplet"
    margin: float = 0.2

    @property
    def mixes(self) -> bool:
        """Whether mixup/cutmix can apply: the loss must be defined per example and per label."""
        return self.kind != "embedding"

    def target_table(self) -> jax.Array:
        return jnp.asarray(self.targets, jnp.float32)

    def class_weight_vector(self, epoch) -> jax.Array | None:
        """The (K,) per-class loss weights at (traced) `epoch`, or None for uniform weights."""
        if self.kind != "classification":
            return None
        if self.drw_weights is not None:
            return losses.drw_weights(
                epoch, self.drw_epoch, jnp.asarray(self.drw_weights, jnp.float32)
            )
        if self.class_weights is not None:
            return jnp.asarray(self.class_weights, jnp.float32)
        return None

    def per_example_loss(
        self, outputs: jax.Array, labels: jax.Array, epoch, mask: jax.Array | None = None
    ) -> jax.Array:
        """The (N,) training loss of `outputs` for integer `labels` at (traced) `epoch`.

        `mask` (0 on padding rows) keeps padding out of an embedding loss's pairs."""
        outputs = outputs.astype(jnp.float32)
        if self.kind == "classification":
            weights = self.class_weight_vector(epoch)
            if self.loss == "focal":
                return losses.focal_loss(outputs, labels, self.focal_gamma, weights=weights)
            if self.loss == "ldam":
                margins = jnp.asarray(self.ldam_margins, jnp.float32)
                return losses.ldam_loss(outputs, labels, margins, self.ldam_scale, weights=weights)
            return losses.softmax_cross_entropy(
                outputs, labels, self.label_smoothing, weights=weights
            )
        if self.kind == "multilabel":
            return losses.sigmoid_binary_cross_entropy(outputs, self.target_table()[labels])
        if self.kind == "regression":
            target = self.target_table()[labels]
            if self.huber_delta:
                return losses.huber_loss(outputs, target, self.huber_delta)
            return losses.l2_loss(outputs, target)
        if self.kind == "multitask":
            return sum(
                losses.softmax_cross_entropy(logits, head_labels, self.label_smoothing)
                for logits, head_labels in self._split(outputs, labels)
            )
        if self.embedding_loss == "contrastive":
            return losses.contrastive_loss(outputs, labels, self.margin, mask=mask)
        return losses.triplet_loss(outputs, labels, self.margin, mask=mask)

    def train_sums(self, outputs: jax.Array, labels: jax.Array, loss: jax.Array) -> dict:
        """Training metric sums of one batch (loss plus the kind's cheap metrics)."""
        if self.kind == "classification":
            return metrics.classification_sums(outputs, labels, loss)
        sums = {"loss": jnp.sum(loss), "count": jnp.asarray(labels.shape[0], jnp.float32)}
        if self.kind == "multitask":
            sums.update(self._head_accuracy_sums(outputs, labels, jnp.ones(labels.shape)))
        return sums

    def eval_sums(self, outputs: jax.Array, labels: jax.Array, mask: jax.Array) -> dict:
        """Evaluation sums of one padded batch (`mask` is 0 on padding rows)."""
        outputs = outputs.astype(jnp.float32)
        if self.kind == "classification":
            # Evaluation reports the plain, unweighted cross-entropy.
            loss = losses.softmax_cross_entropy(outputs, labels)
            sums = metrics.classification_sums(outputs, labels, loss, mask)
            sums["confusion"] = metrics.confusion_sums(outputs, labels, mask)
            return sums
        mask = mask.astype(jnp.float32)
        loss = self.per_example_loss(outputs, labels, 0, mask)
        sums = {"loss": jnp.sum(loss * mask), "count": jnp.sum(mask)}
        if self.kind == "multilabel":
            sums.update(metrics.multilabel_sums(outputs, self.target_table()[labels], mask))
        elif self.kind == "regression":
            sums.update(metrics.regression_sums(outputs, self.target_table()[labels], mask))
        elif self.kind == "multitask":
            sums.update(self._head_accuracy_sums(outputs, labels, mask))
        else:
            sums["recall_at_1"] = batch_recall_at_1(outputs, labels, mask)
        return sums

    def _head_accuracy_sums(self, outputs: jax.Array, labels: jax.Array, mask: jax.Array):
        """Multitask: the number of correct unmasked rows of each head, "<name>/accuracy"."""
        return {
            f"{name}/accuracy": jnp.sum((jnp.argmax(logits, -1) == head_labels) * mask)
            for (name, _), (logits, head_labels) in zip(
                self.heads, self._split(outputs, labels), strict=True
            )
        }

    def _split(self, outputs: jax.Array, labels: jax.Array):
        """Multitask: (logits, labels) of each head."""
        table = jnp.asarray(self.targets, jnp.int32)[labels]
        start = 0
        for index, (_, size) in enumerate(self.heads):
            yield outputs[:, start : start + size], table[:, index]
            start += size


def batch_recall_at_1(embeddings: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
    """How many examples' nearest other example (cosine) in the batch has the same label.

    A cheap, batch-local verification metric for embedding training; `python -m cvjax.features`
    gives the k-NN accuracy against the whole training set.
    """
    e = embeddings / jnp.maximum(jnp.linalg.norm(embeddings, axis=-1, keepdims=True), 1e-12)
    valid = (mask[:, None] * mask[None, :]) * (1.0 - jnp.eye(len(labels)))
    similarity = jnp.where(valid > 0, e @ e.T, -jnp.inf)
    nearest = jnp.argmax(similarity, axis=-1)
    return jnp.sum((labels[nearest] == labels) * mask)


def create_task(
    config: ml_collections.ConfigDict, num_classes: int, class_counts: np.ndarray | None
) -> Task:
    """The task of `config` for a dataset of `num_classes` classes with `class_counts` per class
    in its training split (needed by class-balanced weights and LDAM)."""
    kind = config.get("task", "classification")
    if kind not in KINDS:
        raise UserError(f"unknown task {kind!r}; set --config.task to one of {', '.join(KINDS)}")
    lc = config.get("loss", ml_collections.ConfigDict())
    name = lc.get("name", "softmax_ce")
    common = dict(
        kind=kind,
        num_classes=num_classes,
        label_smoothing=config.get("label_smoothing", 0.0),
        margin=lc.get("margin", 0.2),
    )
    if kind == "classification":
        return _classification(lc, name, num_classes, class_counts, common)
    targets = lc.get("targets", None)
    if kind == "embedding":
        if lc.get("embedding_loss", "triplet") not in ("triplet", "contrastive"):
            raise UserError("loss.embedding_loss must be 'triplet' or 'contrastive'")
        return Task(
            **common,
            num_outputs=lc.get("embedding_dim", 128),
            embedding_loss=lc.get("embedding_loss", "triplet"),
        )
    if kind == "regression":
        rows = targets or tuple((float(k),) for k in range(num_classes))
        table = _table(rows, num_classes, "loss.targets")
        return Task(
            **common,
            num_outputs=table.shape[1],
            targets=_as_tuple(table),
            huber_delta=lc.get("huber_delta", 0.0),
        )
    if not targets:
        raise UserError(
            f"task={kind} needs --config.loss.targets: one row per class "
            f"({'multi-hot labels' if kind == 'multilabel' else 'one class index per head'})"
        )
    table = _table(targets, num_classes, "loss.targets")
    if kind == "multilabel":
        if not np.isin(table, (0.0, 1.0)).all():
            raise UserError("loss.targets of a multilabel task must be 0/1 rows")
        return Task(**common, num_outputs=table.shape[1], targets=_as_tuple(table))
    names = tuple(lc.get("head_names", None) or (f"head{t}" for t in range(table.shape[1])))
    if len(names) != table.shape[1]:
        raise UserError(f"loss.head_names has {len(names)} names for {table.shape[1]} heads")
    sizes = tuple(int(table[:, t].max()) + 1 for t in range(table.shape[1]))
    if (table < 0).any() or (table != np.round(table)).any():
        raise UserError("loss.targets of a multitask task must be class indices (>= 0)")
    return Task(
        **common,
        num_outputs=sum(sizes),
        targets=_as_tuple(table),
        heads=tuple(zip(names, sizes, strict=True)),
    )


def _classification(lc, name, num_classes, class_counts, common) -> Task:
    if name not in CLASSIFICATION_LOSSES:
        raise UserError(
            f"unknown loss {name!r}; set --config.loss.name to one of "
            f"{', '.join(CLASSIFICATION_LOSSES)}"
        )
    weighting = lc.get("class_weights", "none")
    if weighting not in ("none", "class_balanced"):
        raise UserError("loss.class_weights must be 'none' or 'class_balanced'")
    drw_epoch = lc.get("drw_epoch", 0)
    needs_counts = weighting != "none" or drw_epoch or name == "ldam"
    if needs_counts and class_counts is None:
        raise UserError("class-balanced weights and LDAM need in-memory data (stream=False)")
    balanced = None
    if needs_counts:
        balanced = tuple(
            float(w) for w in losses.class_balanced_weights(class_counts, lc.get("cb_beta", 0.9999))
        )
    extra = {}
    if name == "focal":
        extra["focal_gamma"] = lc.get("focal_gamma", 2.0)
    if name == "ldam":
        margins = losses.ldam_margins(class_counts, lc.get("ldam_max_margin", 0.5))
        extra["ldam_margins"] = tuple(float(m) for m in margins)
        extra["ldam_scale"] = lc.get("ldam_scale", 30.0)
    return Task(
        **common,
        num_outputs=num_classes,
        loss=name,
        class_weights=balanced if weighting == "class_balanced" and not drw_epoch else None,
        drw_weights=balanced if drw_epoch else None,
        drw_epoch=drw_epoch,
        normed_head=bool(lc.get("normed_head", False)) or name == "ldam",
        **extra,
    )


def _table(rows, num_classes: int, key: str) -> np.ndarray:
    table = np.asarray(rows, np.float32)
    if table.ndim == 1:
        table = table[:, None]
    if table.ndim != 2 or table.shape[0] != num_classes:
        raise UserError(
            f"{key} needs one row per class ({num_classes} rows), got shape {table.shape}"
        )
    return table


def _as_tuple(table: np.ndarray) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(float(v) for v in row) for row in table)
