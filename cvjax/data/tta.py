"""Test-time augmentation: average the predicted class probabilities over views of each image."""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from cvjax.errors import UserError

CROP_COUNTS = (0, 5, 10)


def _resize(images: jax.Array, height: int, width: int) -> jax.Array:
    n, _, _, c = images.shape
    return jax.image.resize(images, (n, height, width, c), "bilinear", antialias=True)


def five_crops(images: jax.Array, crop_fraction: float = 0.875) -> list[jax.Array]:
    """The four corner crops and the centre crop, each `crop_fraction` of the side, resized
    (bilinearly) back to the input size (Krizhevsky et al. 2012, Sec. 4.1)."""
    _, h, w, _ = images.shape
    ch, cw = max(1, round(crop_fraction * h)), max(1, round(crop_fraction * w))
    corners = [(0, 0), (0, w - cw), (h - ch, 0), (h - ch, w - cw), ((h - ch) // 2, (w - cw) // 2)]
    return [_resize(images[:, y : y + ch, x : x + cw], h, w) for y, x in corners]


def tta_logits(
    predict: Callable[[jax.Array], jax.Array],
    images: jax.Array,
    flip: bool = False,
    crops: int = 0,
    crop_fraction: float = 0.875,
    scales: tuple[float, ...] = (),
    translate: int = 0,
) -> jax.Array:
    """Log of the mean softmax probability over test-time views of a float NHWC batch.

    Views: the whole image, or with `crops=5` the four corner and centre crops of
    `crop_fraction` of the side instead (Krizhevsky et al. 2012, Sec. 4.1), resized back to the
    input size; `crops=10` adds their mirror images (the ten-crop protocol). `scales` adds the
    whole image resized by each factor (multi-scale testing, Simonyan & Zisserman 2015, Sec. 3.2;
    the models here pool globally, so any size works). `flip` adds the horizontal mirror of every
    view. `translate=t` adds the whole image (and its mirror with `flip`) shifted by t pixels
    down-right and up-left, reflect-padded, the shifted views weighing as much together as the
    unshifted ones (airbench's TTA, Jordan 2024, Sec. 3.7: flip and translate by 1 pixel, six
    views; it averages logits, this averages probabilities). `predict(x) -> logits` must be a
    JAX function; views of the input's size run one at a time through `lax.map`, so the model's
    activations take the memory of one batch.

    Returns `log(mean_views(softmax(predict(view))))` (a weighted mean with `translate`), shape
    (N, classes): its softmax is the averaged probability, so argmax, accuracy and cross-entropy
    apply to it as to logits. With a single view it equals `log_softmax(predict(images))`.
    """
    if crops not in CROP_COUNTS:
        raise UserError(f"crops must be one of {CROP_COUNTS}, got {crops}; pick one of them")
    if not 0 < crop_fraction <= 1:
        raise UserError(f"crop_fraction must be in (0, 1], got {crop_fraction}")
    if any(s <= 0 for s in scales):
        raise UserError(f"scales must be positive factors, got {scales}")
    if translate < 0 or (translate and crops):
        raise UserError(f"translate must be >= 0 and goes without crops, got {translate}")
    _, h, w, _ = images.shape
    same_size = five_crops(images, crop_fraction) if crops else [images]
    weights = [2.0 if translate else 1.0] * len(same_size)
    if translate:
        same_size += translations(images, translate)
        weights += [1.0, 1.0]
    if crops == 10 or flip:
        same_size += [view[:, :, ::-1] for view in same_size]
        weights += weights
    log_probs = jax.lax.map(lambda view: jax.nn.log_softmax(predict(view)), jnp.stack(same_size))
    log_probs = list(log_probs)
    for s in scales:
        scaled = _resize(images, max(1, round(s * h)), max(1, round(s * w)))
        for view in [scaled, scaled[:, :, ::-1]] if flip else [scaled]:
            log_probs.append(jax.nn.log_softmax(predict(view)))
            weights.append(1.0)
    # log-sum-exp keeps a confident view's tiny probabilities from underflowing to log(0).
    log_weights = jnp.log(jnp.asarray(weights) / sum(weights))[:, None, None]
    return jax.nn.logsumexp(jnp.stack(log_probs) + log_weights, axis=0)


def translations(images: jax.Array, shift: int) -> list[jax.Array]:
    """The NHWC batch shifted by `shift` pixels down-right and up-left, reflect-padded."""
    _, h, w, _ = images.shape
    padded = jnp.pad(images, ((0, 0), (shift, shift), (shift, shift), (0, 0)), mode="reflect")
    return [padded[:, :h, :w], padded[:, 2 * shift :, 2 * shift :]]
