"""Class activation maps for any registered model: CAM and Grad-CAM.

    python -m cvjax.explain --config=configs/resnet.py:model=resnet20 --workdir=DIR \
        [--checkpoint=latest|best|STEP] [--method=gradcam|cam] [--num_images=8] [--split=test] \
        [--class_index=-1] [--stage=stageN] [--output=DIR/explain] [--ema]

writes, for the first `num_images` images of the split, a PNG of the image under its heatmap (jet,
alpha 0.5) titled with the true and the predicted class, and index.json listing them.

Grad-CAM needs the gradient of a class score w.r.t. a stage's output map. Models sow that map
(`self.sow("intermediates", "stageN", x)`) from a local value, often the output of a function
(max pooling, an activation) rather than of a submodule, so neither `nn.intercept_methods` nor
`Module.perturb` reaches it without editing every model. Instead `with_offset` traces the forward
pass to a jaxpr that also returns the sown map, cuts it after the equation that computes the map
and adds an offset there: d score / d offset at offset 0 is the gradient w.r.t. the map.
"""

import functools
import json
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags
from jax.extend import core as jax_core

from cvjax import features
from cvjax.data import augment
from cvjax.errors import UserError, unknown_name
from cvjax.models.features import feature_maps
from cvjax.models.layers import Classifier


class Explanation(NamedTuple):
    heatmaps: jax.Array  # (N, H, W) in [0, 1], at the input's resolution.
    logits: jax.Array  # (N, classes).
    target: jax.Array  # (N,) the class each heatmap explains.


def with_offset(fn: Callable, *args, index: int) -> tuple[Callable, Any]:
    """`(g, shapes)`: `g(offset, *args)` is `fn(*args)` with `offset` added to its `index`-th
    output leaf where that value is computed, so every later use of it sees the offset too;
    `shapes` are the shapes and dtypes of `fn`'s outputs.

    `fn` is traced once with `args` (arrays or shape-dtype structs); `g` is pure and can be
    jitted and differentiated.
    """
    closed, shapes = jax.make_jaxpr(fn, return_shape=True)(*args)
    jaxpr = closed.jaxpr
    target = jaxpr.outvars[index]
    producers = [i for i, eqn in enumerate(jaxpr.eqns) if any(v is target for v in eqn.outvars)]
    if not producers:
        raise ValueError(f"output {index} is an input or a constant, not a computed value")
    cut = producers[0] + 1
    head, tail = jaxpr.eqns[:cut], jaxpr.eqns[cut:]
    used = {v for eqn in tail for v in eqn.invars if not isinstance(v, jax_core.Literal)}
    used |= {v for v in jaxpr.outvars if not isinstance(v, jax_core.Literal)}
    live = [v for eqn in head for v in eqn.outvars if v in used]
    position = next(i for i, v in enumerate(live) if v is target)

    def closed_jaxpr(constvars, invars, outvars, eqns, consts):
        # jax wants debugging information of the right arity (names for its error messages).
        info = jaxpr.debug_info
        if info is not None:
            info = info._replace(arg_names=("",) * len(invars), result_paths=("",) * len(outvars))
        return jax_core.ClosedJaxpr(
            jax_core.Jaxpr(constvars, invars, outvars, eqns, jaxpr.effects, info), consts
        )

    before = jax_core.jaxpr_as_fun(
        closed_jaxpr(jaxpr.constvars, jaxpr.invars, live, head, closed.consts)
    )
    after = jax_core.jaxpr_as_fun(
        closed_jaxpr([], [*jaxpr.constvars, *jaxpr.invars, *live], jaxpr.outvars, tail, [])
    )
    tree = jax.tree.structure(shapes)

    def perturbed(offset: jax.Array, *args):
        flat = jax.tree.leaves(args)
        values = list(before(*flat))
        values[position] = values[position] + offset.astype(values[position].dtype)
        return jax.tree.unflatten(tree, after(*closed.consts, *flat, *values))

    return perturbed, shapes


def _targets(logits: jax.Array, class_index) -> jax.Array:
    """The class to explain per image: None or a negative int is the predicted class, an int
    that class, an (N,) array one class per image."""
    if class_index is None:
        return jnp.argmax(logits, axis=-1)
    if np.ndim(class_index) == 0:
        class_index = int(class_index)
        if class_index < 0:
            return jnp.argmax(logits, axis=-1)
        if class_index >= logits.shape[-1]:
            raise UserError(
                f"class_index={class_index} but the model has {logits.shape[-1]} classes; use "
                f"0..{logits.shape[-1] - 1}, or -1 for the predicted class"
            )
        return jnp.full(logits.shape[:1], class_index)
    return jnp.asarray(class_index)


def default_stage(model: nn.Module, variables, images: jax.Array) -> str:
    """The last stage whose map is larger than 1x1 (Grad-CAM's "last convolutional layer")."""
    shapes = jax.eval_shape(functools.partial(feature_maps, model), variables, images)
    spatial = [name for name, s in shapes.items() if s.ndim == 4 and s.shape[1] * s.shape[2] > 1]
    if not spatial:
        raise UserError(
            f"no stage of {type(model).__name__} keeps a map larger than 1x1 at "
            f"{images.shape[1]}x{images.shape[2]} input; use larger images"
        )
    return spatial[-1]


def stage_gradient(
    model: nn.Module, variables, images: jax.Array, stage: str, class_index=None
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """(map A of `stage`, d y^c / d A, logits, c) with y^c the logit of the class to explain."""
    model = model.clone(global_pool=True)

    def forward(variables, images):
        logits, state = model.apply(variables, images, train=False, mutable=["intermediates"])
        found = state["intermediates"]
        if stage not in found:
            raise unknown_name("stage", stage, [k for k in found if k.startswith("stage")])
        return logits, found[stage][0]

    perturbed, shapes = with_offset(forward, variables, images, index=1)
    zero = jnp.zeros(shapes[1].shape, shapes[1].dtype)
    (logits, stage_map), pullback = jax.vjp(lambda o: perturbed(o, variables, images), zero)
    target = _targets(logits, class_index)
    one_hot = jax.nn.one_hot(target, logits.shape[-1], dtype=logits.dtype)
    (grad,) = pullback((one_hot, jnp.zeros_like(stage_map)))
    return stage_map, grad, logits, target


def _to_heatmaps(maps: jax.Array, size: tuple[int, int]) -> jax.Array:
    """ReLU, bilinear upsampling to the input size, then each map scaled to [0, 1]."""
    maps = jax.nn.relu(maps.astype(jnp.float32))
    maps = jax.image.resize(maps, (maps.shape[0], *size), "bilinear")
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    return jnp.where(span > 0, (maps - low) / jnp.where(span > 0, span, 1.0), 0.0)


def gradcam(
    model: nn.Module, variables, images: jax.Array, class_index=None, stage: str | None = None
) -> Explanation:
    """Grad-CAM (Selvaraju et al. 2017, Eqs. 1-2): ReLU(sum_k alpha_k A^k), with alpha_k the
    spatial mean of d y^c / d A^k, on `stage` (default: `default_stage`).

    `images` are model inputs (normalized); `class_index` None or -1 explains the predicted
    class, an int that class, an (N,) array one class per image. Jit it with `stage` and
    `class_index` bound (`functools.partial`).
    """
    stage = stage or default_stage(model, variables, images)
    stage_map, grad, logits, target = stage_gradient(model, variables, images, stage, class_index)
    weights = grad.astype(jnp.float32).mean(axis=(1, 2))
    maps = jnp.einsum("nhwc,nc->nhw", stage_map.astype(jnp.float32), weights)
    return Explanation(_to_heatmaps(maps, images.shape[1:3]), logits, target)


def cam(model: nn.Module, variables, images: jax.Array, class_index=None) -> Explanation:
    """CAM (Zhou et al. 2016, Sec. 2): M_c = sum_k w_k^c f_k, with w^c the classifier's weights
    for class c and f the map the classifier average-pools.

    Valid where the classifier is global average pooling + linear on a spatial map (most
    families); where pooling and hidden fully connected layers come before it (VGG, AlexNet,
    MobileNet-v3) a UserError says to use Grad-CAM.
    """
    model = model.clone(global_pool=True)
    captured = {}

    def capture_head_input(next_fun, args, kwargs, context):
        if isinstance(context.module, Classifier) and context.module.path == ("head",):
            captured["map"] = args[0]
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(capture_head_input):
        logits = model.apply(variables, images, train=False)
    head_map = captured["map"]
    if head_map.ndim != 4 or head_map.shape[1] * head_map.shape[2] == 1:
        raise UserError(
            f"CAM needs a spatial map under the classifier's average pooling, but "
            f"{type(model).__name__}'s classifier sees shape {tuple(head_map.shape)} (pooling and "
            "fully connected layers come first, or the input is too small); use Grad-CAM "
            "(--method=gradcam)"
        )
    target = _targets(logits, class_index)
    kernel = variables["params"]["head"]["fc"]["kernel"]
    maps = jnp.einsum("nhwc,cn->nhw", head_map.astype(jnp.float32), kernel[:, target])
    return Explanation(_to_heatmaps(maps, images.shape[1:3]), logits, target)


METHODS = {"gradcam": gradcam, "cam": cam}


def save_overlay(image: np.ndarray, heatmap: np.ndarray, title: str, path: str) -> None:
    """The image under its heatmap (jet colormap, alpha 0.5), as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.0, 3.3), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(image, interpolation="nearest")
    ax.imshow(heatmap, cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)


def explain_checkpoint(
    config: ml_collections.ConfigDict,
    workdir: str,
    checkpoint: str = "latest",
    method: str = "gradcam",
    num_images: int = 8,
    split: str = "test",
    class_index: int = -1,
    stage: str | None = None,
    output: str | None = None,
    use_ema: bool = False,
) -> dict:
    """What the CLI does: heatmaps of the first `num_images` of `split`, written as PNG overlays
    and index.json to `output` (default workdir/explain); returns the step and the paths."""
    if method not in METHODS:
        raise unknown_name("method", method, METHODS)
    if num_images < 1:
        raise UserError(f"num_images={num_images} must be at least 1")
    exp, state = features.restore(config, workdir, checkpoint)
    exp.checkpoints.close()
    if use_ema and state.ema_params is None:
        raise UserError("this run keeps no EMA parameters (ema_decay=0); drop --ema")
    size, read = features.split_reader(exp, split)
    images, labels = read(np.arange(min(num_images, size)))
    cfg, variables = exp.step_config, state.variables(use_ema)
    x = augment.normalize(jnp.asarray(images), cfg.mean, cfg.std, cfg.dtype)
    if method == "gradcam":
        stage = stage or default_stage(exp.model, variables, x)
        run = functools.partial(gradcam, exp.model, class_index=class_index, stage=stage)
    else:
        run = functools.partial(cam, exp.model, class_index=class_index)
    result = jax.device_get(jax.jit(run)(variables, x))
    probabilities = np.asarray(jax.nn.softmax(result.logits, axis=-1))
    output = output or os.path.join(workdir, "explain")
    os.makedirs(output, exist_ok=True)
    names, entries = exp.class_names, []
    for i, label in enumerate(labels.tolist()):
        predicted, target = int(probabilities[i].argmax()), int(result.target[i])
        probability = float(probabilities[i, predicted])
        entry = {"file": f"{i:04d}_{method}.png", "index": i, "label": label}
        entries.append(
            {**entry, "predicted": predicted, "target": target, "probability": probability}
        )
        title = f"true {names[label]} | pred {names[predicted]} ({probability:.0%})"
        if target != predicted:
            title += f"\n{method} for {names[target]}"
        path = os.path.join(output, entry["file"])
        save_overlay(images[i], np.asarray(result.heatmaps[i]), title, path)
    step = int(jax.device_get(state.step))
    index = {"method": method, "stage": stage, "step": step, "checkpoint": checkpoint}
    index.update(split=split, class_names=list(names), images=entries)
    with open(os.path.join(output, "index.json"), "w") as f:
        json.dump(index, f, indent=1)
    return {"step": step, "images": len(entries), "output": output}


def _main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    f = flags.FLAGS

    def work(config: ml_collections.ConfigDict, workdir: str) -> dict:
        stage = f.stage or None
        return explain_checkpoint(
            config,
            workdir,
            f.checkpoint,
            f.method,
            f.num_images,
            f.split,
            f.class_index,
            stage,
            f.output,
            f.ema,
        )

    features.run_command(work)


if __name__ == "__main__":
    features.define_common_flags()
    flags.DEFINE_enum("method", "gradcam", list(METHODS), "gradcam (any model) or cam.")
    flags.DEFINE_integer("num_images", 8, "How many images, from the start of the split.")
    flags.DEFINE_enum("split", "test", list(features.SPLITS), "Which split's images.")
    flags.DEFINE_integer("class_index", -1, "The class to explain; -1: the predicted one.")
    flags.DEFINE_string("stage", "", "Grad-CAM's stage, e.g. stage3; '': the last one above 1x1.")
    flags.DEFINE_string("output", None, "Where the PNGs go; default <workdir>/explain.")
    app.run(_main)
