"""On-device augmentation, run inside the jitted train step on NHWC batches.

Crops run on uint8 images; Cutout and random erasing on uint8 or normalized float images; Mixup
and CutMix on normalized float images. Shapes are static and every image draws its own randomness.
AutoAugment / RandAugment live in `autoaugment`, test-time augmentation in `tta`.
"""

import math

import jax
import jax.numpy as jnp

from cvjax.errors import UserError, unknown_name

PAD_MODES = ("constant", "reflect")


def random_crop_flip(
    rng: jax.Array, images: jax.Array, padding: int, flip: bool, pad_mode: str = "constant"
) -> jax.Array:
    """Zero-pad by `padding`, take a random crop of the original size, flip half horizontally.

    The standard CIFAR augmentation of He et al. 2016, Sec. 4.2; `pad_mode="reflect"` mirrors the
    border instead (random translation as in airbench, Jordan 2024).
    """
    if pad_mode not in PAD_MODES:
        raise unknown_name("crop pad mode", pad_mode, PAD_MODES)
    n, h, w, _ = images.shape
    crop_rng, flip_rng = jax.random.split(rng)
    if padding:
        pads = ((0, 0), (padding, padding), (padding, padding), (0, 0))
        padded = jnp.pad(images, pads, mode=pad_mode)
        offsets = jax.random.randint(crop_rng, (n, 2), 0, 2 * padding + 1)

        def crop(image, offset):
            return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (h, w, image.shape[-1]))

        images = jax.vmap(crop)(padded, offsets)
    if flip:
        do_flip = jax.random.bernoulli(flip_rng, 0.5, (n, 1, 1, 1))
        images = jnp.where(do_flip, images[:, :, ::-1, :], images)
    return images


def alternating_flip(
    rng: jax.Array, images: jax.Array, index: jax.Array, epoch: jax.Array | int
) -> jax.Array:
    """Flips the training examples `index` (dataset positions of `images`) as airbench does.

    Jordan 2024, Sec. 3.6: a fixed random half of the training set (drawn once from `rng`, by
    example) is flipped in even epochs and the other half in odd ones, so each example is seen
    both ways in every two epochs instead of at random. Deterministic in (rng, index, epoch).
    """
    first = _example_bits(rng, index)
    do_flip = jnp.logical_xor(first, jnp.asarray(epoch) % 2 == 1)
    return jnp.where(do_flip[:, None, None, None], images[:, :, ::-1, :], images)


def _example_bits(rng: jax.Array, index: jax.Array) -> jax.Array:
    """One fair random bit per dataset example, a function of (rng, example index) only."""
    bits = jax.vmap(lambda i: jax.random.bits(jax.random.fold_in(rng, i), (), jnp.uint32))(index)
    return (bits & 1).astype(bool)


def normalize(images: jax.Array, mean, std, dtype=jnp.float32) -> jax.Array:
    """uint8 images to `(x - mean) / std` per channel; mean and std in 0..255 units."""
    x = images.astype(jnp.float32)
    x = (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
    return x.astype(dtype)


def _flat(draw, rng: jax.Array, shape: tuple[int, ...], **kwargs) -> jax.Array:
    """`draw(rng, shape)` made as one flat draw: XLA compiles a 1-D threefry draw several times
    faster than a multi-dimensional one, and every random call site adds to the step's compile."""
    return draw(rng, (math.prod(shape),), **kwargs).reshape(shape)


def _place_first_fit(box_h, box_w, fits, offsets, height: int, width: int):
    """The first fitting `(num, attempts)` size of each row, at uniform whole-pixel offsets
    `floor(u * (size - box + 1))` from the `(num, 2)` uniforms `offsets`; also whether any fit."""
    first = jnp.argmax(fits, axis=1)[:, None]
    box_h = jnp.take_along_axis(box_h, first, axis=1)[:, 0]
    box_w = jnp.take_along_axis(box_w, first, axis=1)[:, 0]
    top = jnp.floor(offsets[:, 0] * (height - box_h + 1)).astype(jnp.int32)
    left = jnp.floor(offsets[:, 1] * (width - box_w + 1)).astype(jnp.int32)
    return top, left, box_h, box_w, fits.any(axis=1)


def random_resized_crop_boxes(
    rng: jax.Array,
    num: int,
    height: int,
    width: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    attempts: int = 10,
) -> jax.Array:
    """`(num, 4)` int32 boxes `(top, left, box_height, box_width)` of Inception-style crops.

    Szegedy et al. 2015, Sec. 6, as torchvision's `RandomResizedCrop.get_params`: an area fraction
    uniform in `scale` and a log-uniform aspect ratio (width / height) in `ratio`; the first of
    `attempts` draws that fits is kept, otherwise a centre crop clamped to `ratio`.
    """
    # One draw for everything: each random-number call site costs compile time.
    u = _flat(jax.random.uniform, rng, (num, attempts + 1, 2))
    target_area = height * width * (scale[0] + (scale[1] - scale[0]) * u[:, :attempts, 0])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = jnp.exp(log_lo + (log_hi - log_lo) * u[:, :attempts, 1])
    box_w = jnp.round(jnp.sqrt(target_area * aspect)).astype(jnp.int32)
    box_h = jnp.round(jnp.sqrt(target_area / aspect)).astype(jnp.int32)
    fits = (box_w > 0) & (box_w <= width) & (box_h > 0) & (box_h <= height)
    *box, found = _place_first_fit(box_h, box_w, fits, u[:, attempts], height, width)

    in_ratio = width / height
    if in_ratio < min(ratio):
        fallback_w, fallback_h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fallback_w, fallback_h = int(round(height * max(ratio))), height
    else:
        fallback_w, fallback_h = width, height
    fallback = jnp.array(
        [(height - fallback_h) // 2, (width - fallback_w) // 2, fallback_h, fallback_w], jnp.int32
    )
    return jnp.where(found[:, None], jnp.stack(box, axis=1), fallback)


def random_resized_crop(
    rng: jax.Array,
    images: jax.Array,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    out_size: tuple[int, int] | None = None,
) -> jax.Array:
    """Inception-style random crop of each uint8 image, resized bilinearly to `out_size`.

    Szegedy et al. 2015, Sec. 6 (torchvision `RandomResizedCrop` semantics, including its fallback
    to a centre crop); boxes from `random_resized_crop_boxes`. The resize is antialiased when it
    shrinks. Static shapes: the crop is a scale-and-translate of the whole image, so the filter
    taps at the crop's edge may reach the pixels just outside it. Returns uint8 of shape
    `(N, *out_size, C)`, `out_size` defaulting to the input's `(H, W)`.
    """
    n, h, w, c = images.shape
    out_h, out_w = out_size or (h, w)
    boxes = random_resized_crop_boxes(rng, n, h, w, scale, ratio).astype(jnp.float32)

    def resize(image, box):
        top, left, box_h, box_w = box[0], box[1], box[2], box[3]
        factor = jnp.stack([out_h / box_h, out_w / box_w])
        out = jax.image.scale_and_translate(
            image.astype(jnp.float32),
            (out_h, out_w, c),
            (0, 1),
            factor,
            -jnp.stack([top, left]) * factor,
            method="linear",
        )
        return jnp.clip(jnp.round(out), 0, 255).astype(jnp.uint8)

    return jax.vmap(resize)(images, boxes)


def _box_mask(height: int, width: int, top, left, bottom, right) -> jax.Array:
    """`(..., H, W)` bool mask of the half-open boxes `[top, bottom) x [left, right)`."""
    rows = jnp.arange(height)
    cols = jnp.arange(width)
    in_rows = (rows >= top[..., None]) & (rows < bottom[..., None])
    in_cols = (cols >= left[..., None]) & (cols < right[..., None])
    return in_rows[..., :, None] & in_cols[..., None, :]


def cutout(rng: jax.Array, images: jax.Array, length: int, fill: float = 0) -> jax.Array:
    """Sets one square of side `length` per image to `fill`; its centre is uniform over the image
    and it is clipped at the border.

    DeVries & Taylor 2017, Sec. 3 (reference code: corners `centre -+ length // 2`). The paper
    applies it to normalized images, where `fill=0` is the dataset mean; any dtype works.
    """
    n, h, w, _ = images.shape
    centre = jnp.floor(_flat(jax.random.uniform, rng, (n, 2)) * jnp.array([h, w])).astype(jnp.int32)
    cy, cx = centre[:, 0], centre[:, 1]
    half = length // 2
    mask = _box_mask(
        h,
        w,
        jnp.clip(cy - half, 0, h),
        jnp.clip(cx - half, 0, w),
        jnp.clip(cy + half, 0, h),
        jnp.clip(cx + half, 0, w),
    )
    return jnp.where(mask[..., None], jnp.asarray(fill, images.dtype), images)


def random_erasing(
    rng: jax.Array,
    images: jax.Array,
    prob: float = 0.5,
    area: tuple[float, float] = (0.02, 0.4),
    ratio: tuple[float, float] = (0.3, 1 / 0.3),
    fill: str = "random",
    attempts: int = 100,
) -> jax.Array:
    """Erases one random rectangle per image with probability `prob`.

    Zhong et al. 2020, Alg. 1 (defaults p = 0.5, s_l = 0.02, s_h = 0.4, r_1 = 1 / r_2 = 0.3): area
    fraction uniform in `area`, aspect ratio (height / width) uniform in `ratio`; as the reference
    code, the first of `attempts` sizes strictly inside the image is placed uniformly, and an image
    with none stays unchanged. `fill="random"` gives each erased value a random draw (uint8:
    uniform in 0..255; float, i.e. normalized images: standard normal), `fill="zero"` gives 0.
    """
    if fill not in ("random", "zero"):
        raise unknown_name("random-erasing fill", fill, ("random", "zero"))
    n, h, w, _ = images.shape
    size_rng, place_rng, fill_rng = jax.random.split(rng, 3)
    u = _flat(jax.random.uniform, size_rng, (n, attempts, 2))
    target = h * w * (area[0] + (area[1] - area[0]) * u[..., 0])
    aspect = ratio[0] + (ratio[1] - ratio[0]) * u[..., 1]
    box_h = jnp.round(jnp.sqrt(target * aspect)).astype(jnp.int32)
    box_w = jnp.round(jnp.sqrt(target / aspect)).astype(jnp.int32)
    place = _flat(jax.random.uniform, place_rng, (n, 3))
    fits = (box_h < h) & (box_w < w)
    top, left, box_h, box_w, found = _place_first_fit(box_h, box_w, fits, place[:, :2], h, w)
    erase = found & (place[:, 2] < prob)
    mask = _box_mask(h, w, top, left, top + box_h, left + box_w) & erase[:, None, None]
    if fill == "zero":
        values = jnp.zeros((), images.dtype)
    elif images.dtype == jnp.uint8:
        values = _flat(jax.random.bits, fill_rng, images.shape, dtype=jnp.uint8)
    else:
        values = _flat(jax.random.normal, fill_rng, images.shape, dtype=images.dtype)
    return jnp.where(mask[..., None], values, images)


MIX_MODES = ("mixup", "cutmix", "both")


def mix(
    rng: jax.Array,
    images: jax.Array,
    mode: str,
    alpha: float,
    prob: float = 1.0,
    switch_prob: float = 0.5,
    cutmix_alpha: float | None = None,
    per_example: bool = False,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Mixup or CutMix of a float batch with its reversed order; returns `(images, partner, lam)`.

    Mixup: Zhang et al. 2018, `lam ~ Beta(alpha, alpha)`, `lam * x + (1 - lam) * x[partner]`.
    CutMix: Yun et al. 2019, Sec. 3.1: a box of side `sqrt(1 - lam)` times the image's, centre
    uniform, clipped at the border, filled from the partner; `lam` is recomputed as the fraction
    of the image left unpasted. `mode="both"` picks CutMix with probability `switch_prob`, else
    Mixup (timm's `Mixup`), CutMix drawing from `Beta(cutmix_alpha, cutmix_alpha)` (default
    `alpha`). A batch is mixed with probability `prob`, else `lam = 1`. One `lam` and box per
    batch as in the papers, or per image with `per_example`.

    `partner` is the `(N,)` int32 index `N-1, ..., 0` (timm's batch flip) and `lam` is `(N,)`
    float32, so any loss mixes as `lam * loss(y) + (1 - lam) * loss(y[partner])`.
    """
    if mode not in MIX_MODES:
        raise unknown_name("mix mode", mode, MIX_MODES)
    cutmix_alpha = alpha if cutmix_alpha is None else cutmix_alpha
    if alpha <= 0 or cutmix_alpha <= 0:
        raise UserError(f"mix alpha must be > 0 (got {alpha}, {cutmix_alpha}); set a positive one")
    n, h, w, _ = images.shape
    draw_rng, lam_rng = jax.random.split(rng)
    shape = (n,) if per_example else ()
    u = _flat(jax.random.uniform, draw_rng, (4, *shape))  # apply, switch, box centre y, x
    # Beta(a, b) = G_a / (G_a + G_b) = sigmoid(log G_a - log G_b), stable for small alphas; one
    # loggamma call serves both draws (a random-number call site costs compile time).
    size = math.prod(shape)
    alphas = jnp.repeat(jnp.array([alpha, alpha, cutmix_alpha, cutmix_alpha], jnp.float32), size)
    log_g = jax.random.loggamma(lam_rng, alphas).reshape((4, *shape))
    lam_mix, lam_box = jax.nn.sigmoid(log_g[0] - log_g[1]), jax.nn.sigmoid(log_g[2] - log_g[3])
    partner = jnp.arange(n - 1, -1, -1, dtype=jnp.int32)
    other = images[partner]
    apply = u[0] < prob
    use_cut = {"mixup": u[1] > 1, "cutmix": u[1] <= 1, "both": u[1] < switch_prob}[mode]

    out, lam = images, jnp.ones(shape, jnp.float32)
    if mode != "cutmix":
        lam_img = lam_mix.astype(images.dtype).reshape(shape + (1, 1, 1))
        mixed = lam_img * images + (1 - lam_img) * other
        out = jnp.where((apply & ~use_cut).reshape(shape + (1, 1, 1)), mixed, out)
        lam = jnp.where(apply & ~use_cut, lam_mix, lam)
    if mode != "mixup":
        cut_ratio = jnp.sqrt(1.0 - lam_box)
        half_h = (h * cut_ratio).astype(jnp.int32) // 2
        half_w = (w * cut_ratio).astype(jnp.int32) // 2
        cy, cx = jnp.floor(u[2] * h).astype(jnp.int32), jnp.floor(u[3] * w).astype(jnp.int32)
        top, bottom = jnp.clip(cy - half_h, 0, h), jnp.clip(cy + half_h, 0, h)
        left, right = jnp.clip(cx - half_w, 0, w), jnp.clip(cx + half_w, 0, w)
        take = _box_mask(h, w, top, left, bottom, right) & (apply & use_cut)[..., None, None]
        out = jnp.where(take[..., None], other, out)
        lam_cut = 1.0 - ((bottom - top) * (right - left)).astype(jnp.float32) / (h * w)
        lam = jnp.where(apply & use_cut, lam_cut, lam)
    return out, partner, jnp.broadcast_to(lam, (n,))
