"""CAM and Grad-CAM: the gradient at a sown stage, CAM = Grad-CAM, every kind of model, the CLI."""

import functools
import json
import os

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cvjax import data, explain, features, models
from cvjax.data import augment
from cvjax.errors import UserError
from cvjax.models.layers import Classifier
from tests.test_features import random_variables, run_cli, trained_config, trained_workdir


class TinyNet(nn.Module):
    """A stage map made by a function (max pooling), then used twice (a conv and a product)."""

    num_classes: int = 3
    global_pool: bool = True

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.relu(nn.Conv(4, (3, 3), name="conv1")(x))
        a = nn.max_pool(x, (2, 2), (2, 2))
        self.sow("intermediates", "stage1", a)
        y = _after_stage1(a, nn.Conv(4, (3, 3), name="conv2"))
        self.sow("intermediates", "stage2", y)
        return Classifier(self.num_classes, global_pool=self.global_pool, name="head")(y, train)


def _after_stage1(a, conv):
    return jnp.tanh(conv(a)) + a * a.mean(axis=-1, keepdims=True)


def test_gradient_at_a_sown_stage_matches_finite_differences():
    model = TinyNet()
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 1))
    variables = random_variables(model, x)
    params = variables["params"]

    @jax.jit
    def run(variables, x):
        found = explain.stage_gradient(model, variables, x, "stage1", class_index=2)
        return found, model.apply(variables, x)

    (stage_map, grad, logits, target), plain_logits = run(variables, x)
    chex.assert_trees_all_close(logits, plain_logits, atol=1e-6)  # The offset starts at zero.
    np.testing.assert_array_equal(target, [2, 2])
    assert stage_map.shape == grad.shape == (2, 4, 4, 4)

    @jax.jit
    def score(a):  # The network from stage1 on, rebuilt from its parts.
        conv = functools.partial(nn.Conv(4, (3, 3)).apply, {"params": params["conv2"]})
        y = _after_stage1(a, conv)
        return Classifier(3).apply({"params": params["head"]}, y, train=False)[:, 2].sum()

    direction = jax.random.normal(jax.random.PRNGKey(2), stage_map.shape)
    eps = 1e-2
    finite = (score(stage_map + eps * direction) - score(stage_map - eps * direction)) / (2 * eps)
    assert float(jnp.vdot(grad, direction)) == pytest.approx(float(finite), rel=2e-3)


def test_gradcam_equals_cam_when_the_head_is_average_pooling_and_linear():
    model = models.create("resnet8", num_classes=10, in_channels=1)
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 16, 16, 1))
    variables = random_variables(model, x)
    classes = jnp.array([1, 5, 5])

    @jax.jit
    def both(variables, x):
        grad = explain.stage_gradient(model, variables, x, "stage3", classes)[1]
        predicted = explain.gradcam(model, variables, x), explain.cam(model, variables, x)
        return grad, explain.gradcam(model, variables, x, classes), predicted

    grad, by_gradient, (predicted, by_weights) = both(variables, x)
    # y^c = w^c . mean_hw(A) + b: the gradient is w^c / (h w) everywhere (Selvaraju et al. 2017,
    # Sec. 3.1), so Grad-CAM's weights are CAM's up to 1 / (h w), and the normalized maps agree.
    kernel = variables["params"]["head"]["fc"]["kernel"]
    expected = jnp.broadcast_to(kernel[:, classes].T[:, None, None, :] / 16, grad.shape)
    chex.assert_trees_all_close(grad, expected, atol=1e-6)
    np.testing.assert_array_equal(by_weights.target, jnp.argmax(by_weights.logits, -1))
    chex.assert_trees_all_close(predicted.heatmaps, by_weights.heatmaps, atol=1e-5)
    np.testing.assert_array_equal(by_gradient.target, classes)
    heat = by_gradient.heatmaps
    assert heat.shape == (3, 16, 16)
    # Each map spans [0, 1], or is all zero where no evidence for the class is positive.
    assert float(heat.min()) == 0.0 and set(np.round(heat.max(axis=(1, 2)), 5).tolist()) <= {
        0.0,
        1.0,
    }


@pytest.mark.parametrize(
    "name, stage",
    [
        ("vgg11", "stage4"),  # Pooling, fc6 and fc7 before the classifier; stage5 is 1x1 here.
        ("mobilenet_v3_small", "stage4"),  # Pooling and a hidden linear layer before it.
    ],
)
def test_gradcam_runs_where_cam_does_not(name, stage):
    model = models.create(name, num_classes=10)
    x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    variables = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x)
    assert explain.default_stage(model, variables, x) == stage
    result = jax.eval_shape(functools.partial(explain.gradcam, model, stage=stage), variables, x)
    assert result.heatmaps.shape == (2, 32, 32) and result.logits.shape == (2, 10)
    with pytest.raises(UserError, match="use Grad-CAM"):
        jax.eval_shape(functools.partial(explain.cam, model), variables, x)


def test_gradcam_of_a_small_vgg_with_fully_connected_layers():
    model = models.create("vgg11", num_classes=3, widths=(4, 4, 8, 8, 8), fc_width=8)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 3))
    variables = random_variables(model, x)
    result = jax.jit(functools.partial(explain.gradcam, model, stage="stage3"))(variables, x)
    heat = np.asarray(result.heatmaps)
    assert heat.shape == (2, 32, 32) and np.isfinite(heat).all()
    assert heat.min() >= 0.0 and heat.max() <= 1.0


def _foreground_wins(heatmaps: np.ndarray, images: np.ndarray) -> float:
    """The fraction of images whose mean heat on ink exceeds that on the background."""
    ink = images[..., 0] > 64
    on_ink = (heatmaps * ink).sum((1, 2)) / ink.sum((1, 2))
    off_ink = (heatmaps * ~ink).sum((1, 2)) / (~ink).sum((1, 2))
    return float(np.mean(on_ink > off_ink))


def test_cli_writes_overlays_and_the_heat_lies_on_the_digits(tmp_path_factory):
    workdir = trained_workdir(tmp_path_factory)
    run = run_cli("cvjax.explain", workdir, "--num_images=6")
    assert run.returncode == 0, run.stderr[-3000:]
    output = os.path.join(workdir, "explain")
    with open(os.path.join(output, "index.json")) as f:
        index = json.load(f)
    assert index["method"] == "gradcam" and index["stage"] == "stage3"
    test = data.load("digits", "test", image_size=16)
    assert [e["label"] for e in index["images"]] == test.labels[:6].tolist()
    for entry in index["images"]:
        with open(os.path.join(output, entry["file"]), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        assert entry["target"] == entry["predicted"]

    # Real data. The heat lies on the strokes more than on the background for most test digits
    # (a centred blob would too: the digits are centred), and it marks evidence the model uses:
    # erasing the hottest quarter of the pixels lowers the explained logit more than erasing the
    # coldest quarter (the deletion test of Petsiuk et al. 2018), for most digits.
    exp, state = features.restore(trained_config(), workdir)
    exp.checkpoints.close()
    images, variables = test.images[:64], state.variables()
    mean, std = exp.step_config.mean, exp.step_config.std
    x = augment.normalize(images, mean, std)
    result = jax.jit(functools.partial(explain.gradcam, exp.model, stage="stage3"))(variables, x)
    heat = np.asarray(result.heatmaps)
    assert _foreground_wins(heat, images) > 0.5
    apply = jax.jit(exp.model.apply)
    rows, target = np.arange(len(images)), np.asarray(result.target)

    def logit_without(erase):
        erased = np.where(erase[..., None], 0, images).astype(np.uint8)
        return np.asarray(apply(variables, augment.normalize(erased, mean, std)))[rows, target]

    rank = heat.reshape(len(images), -1).argsort(axis=1).argsort(axis=1).reshape(heat.shape)
    quarter = heat[0].size // 4
    hottest, coldest = rank >= heat[0].size - quarter, rank < quarter
    assert np.mean(logit_without(hottest) < logit_without(coldest)) > 0.5

    with pytest.raises(UserError, match="class_index=10 but the model has 10 classes"):
        jax.eval_shape(functools.partial(explain.gradcam, exp.model, class_index=10), variables, x)
