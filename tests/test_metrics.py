import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import metrics as skm

from cvjax import losses, metrics

RNG = np.random.default_rng(0)
K = 6
# Class 5 never occurs (true or predicted); class 4 is predicted but never true.
LABELS = RNG.integers(0, 4, size=40)
LOGITS = RNG.normal(size=(40, K)).astype(np.float32)
LOGITS[:, 5] -= 10.0
LOGITS[np.arange(40), LABELS] += RNG.random(40) * 2  # Better than chance.
PRED = LOGITS.argmax(-1)


def test_confusion_sums_match_sklearn_and_respect_the_mask():
    conf = metrics.confusion_sums(LOGITS, LABELS)
    assert conf.shape == (K, K) and conf.dtype == jnp.float32
    np.testing.assert_array_equal(conf, skm.confusion_matrix(LABELS, PRED, labels=range(K)))
    mask = (np.arange(40) < 25).astype(np.float32)
    masked = metrics.confusion_sums(LOGITS, LABELS, mask)
    ref = skm.confusion_matrix(LABELS[:25], PRED[:25], labels=range(K))
    np.testing.assert_array_equal(masked, ref)


def test_classification_report_matches_sklearn():
    report = metrics.classification_report(skm.confusion_matrix(LABELS, PRED, labels=range(K)))
    assert PRED.max() == 4 and LABELS.max() == 3  # The absent-class cases are exercised.
    assert report["accuracy"] == pytest.approx(skm.accuracy_score(LABELS, PRED))
    for average in ("micro", "macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(
            LABELS, PRED, average=average, zero_division=0
        )
        assert report[f"precision_{average}"] == pytest.approx(p)
        assert report[f"recall_{average}"] == pytest.approx(r)
        assert report[f"f1_{average}"] == pytest.approx(f)
    with pytest.warns(UserWarning):  # sklearn warns: class 4 is predicted but never true.
        balanced = skm.balanced_accuracy_score(LABELS, PRED)
    assert report["balanced_accuracy"] == pytest.approx(balanced)
    recall = skm.recall_score(LABELS, PRED, labels=range(K), average=None, zero_division=0)
    for k in range(K):
        assert report[f"per_class_accuracy/{k}"] == pytest.approx(recall[k])
    named = metrics.classification_report(np.eye(2) * 3, class_names=["tabby cat", "dog"])
    assert named["per_class_accuracy/tabby_cat"] == 1.0 and named["accuracy"] == 1.0


def test_multilabel_report_matches_sklearn():
    logits = RNG.normal(size=(30, 4)).astype(np.float32)
    targets = (RNG.random((30, 4)) < 0.4).astype(np.float32)
    targets[:, 3] = 0  # A label that never occurs.
    pred = (logits > 0).astype(int)
    sums = jax.device_get(metrics.multilabel_sums(logits, targets))
    report = metrics.multilabel_report(sums)
    for average in ("micro", "macro"):
        p, r, f, _ = skm.precision_recall_fscore_support(
            targets, pred, average=average, zero_division=0
        )
        assert report[f"precision_{average}"] == pytest.approx(p)
        assert report[f"recall_{average}"] == pytest.approx(r)
        assert report[f"f1_{average}"] == pytest.approx(f)
    assert report["hamming_accuracy"] == pytest.approx(1 - skm.hamming_loss(targets, pred))
    assert report["exact_match"] == pytest.approx(skm.accuracy_score(targets, pred))
    f1 = skm.f1_score(targets, pred, average=None, zero_division=0)
    for label in range(4):
        assert report[f"per_label_f1/{label}"] == pytest.approx(f1[label])
        accuracy = np.mean(pred[:, label] == targets[:, label])
        assert report[f"per_label_accuracy/{label}"] == pytest.approx(accuracy)


def test_regression_summary_matches_sklearn():
    pred = RNG.normal(size=(12, 2)).astype(np.float32)
    target = RNG.normal(size=(12, 2)).astype(np.float32)
    out = metrics.summarize(metrics.regression_sums(pred, target), "eval")
    mse = skm.mean_squared_error(target, pred)
    assert out["eval/mse"] == pytest.approx(mse, rel=1e-5)
    assert out["eval/mae"] == pytest.approx(skm.mean_absolute_error(target, pred), rel=1e-5)
    assert out["eval/rmse"] == pytest.approx(np.sqrt(mse), rel=1e-5)


def test_shot_accuracy_groups_classes_by_training_count():
    conf = np.diag([8.0, 6.0, 4.0, 2.0, 0.0]) + 2.0 * (1 - np.eye(5)) / 4
    # Per-class accuracy (row sums are 10, 8, 6, 4, 2): 0.8, 0.75, 2/3, 0.5, 0.
    train_counts = np.array([500, 101, 100, 20, 19])
    out = metrics.shot_accuracy(conf, train_counts)
    assert out["many_shot_accuracy"] == pytest.approx((0.8 + 0.75) / 2)
    assert out["medium_shot_accuracy"] == pytest.approx((2 / 3 + 0.5) / 2)
    assert out["few_shot_accuracy"] == pytest.approx(0.0)
    assert "few_shot_accuracy" not in metrics.shot_accuracy(conf[:4, :4], train_counts[:4])


def test_means_skip_arrays_and_summarize_adds_the_reports():
    loss = losses.softmax_cross_entropy(LOGITS, LABELS)
    sums = metrics.classification_sums(LOGITS, LABELS, loss)
    sums["confusion"] = metrics.confusion_sums(LOGITS, LABELS)
    means = metrics.means(sums, "eval")
    assert set(means) == {"eval/loss", "eval/accuracy", "eval/top5_accuracy"}
    out = metrics.summarize(sums, "eval", train_counts=np.array([200, 50, 10, 10, 5, 1]))
    assert out["eval/accuracy"] == means["eval/accuracy"]
    assert out["eval/accuracy"] == pytest.approx(np.mean(PRED == LABELS))
    assert "eval/per_class_accuracy/3" in out and "eval/f1_macro" in out
    assert "eval/many_shot_accuracy" in out and "eval/few_shot_accuracy" in out
    assert all(isinstance(v, float) for v in out.values())


def test_two_half_batches_add_up_to_the_whole_batch():
    targets = (LOGITS[:, :3] + RNG.normal(size=(40, 3)) > 0).astype(np.float32)
    mask = (np.arange(40) < 37).astype(np.float32)  # Three padding rows.

    @jax.jit
    def batch_sums(logits, labels, targets, mask):
        loss = losses.softmax_cross_entropy(logits, labels)
        sums = metrics.classification_sums(logits, labels, loss, mask)
        sums["confusion"] = metrics.confusion_sums(logits, labels, mask)
        sums.update(
            {f"ml_{k}": v for k, v in metrics.multilabel_sums(logits[:, :3], targets, mask).items()}
        )
        sums.update(metrics.regression_sums(logits[:, :2], logits[:, 2:4], mask))
        return sums

    whole = batch_sums(LOGITS, LABELS, targets, mask)
    halves = [
        batch_sums(LOGITS[s], LABELS[s], targets[s], mask[s]) for s in (np.s_[:20], np.s_[20:])
    ]
    total = metrics.add(metrics.add(None, halves[0]), halves[1])
    assert float(whole["count"]) == 37
    for key in whole:
        np.testing.assert_allclose(total[key], whole[key], rtol=1e-6, err_msg=key)


def test_plot_confusion_writes_a_png(tmp_path):
    conf = skm.confusion_matrix(LABELS, PRED, labels=range(K))
    path = metrics.plot_confusion(conf, str(tmp_path / "sub" / "confusion.png"), list("abcdef"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    raw = metrics.plot_confusion(conf, str(tmp_path / "raw.png"), normalize=False)
    assert (tmp_path / "raw.png").stat().st_size > 1000 and raw.endswith("raw.png")
