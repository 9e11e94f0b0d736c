"""AutoAugment and RandAugment on uint8 NHWC batches, jit-traceable, inside the train step.

The 16 operations reproduce PIL's (`ImageOps`, `ImageEnhance`, `Image.transform`), which the
AutoAugment reference code calls, on uint8 images of 1 or 3 channels. Geometric operations use
nearest-neighbour sampling with PIL's pixel-centre convention and fill uncovered pixels with 128,
as the TF reference does. A magnitude level on the scale 0..10 maps linearly onto each
operation's range of Cubuk et al. 2019, Table 1 (`level / 10 * range`); shear, translate and
rotate take a random sign. Each image draws its own sub-policy or operations (vmap over keys).
"""

import functools

import jax
import jax.numpy as jnp

from cvjax.data import augment
from cvjax.errors import UserError, unknown_name

FILL = 128
MAX_LEVEL = 10.0
# Translations as a fraction of the image side: 150 px of the paper's 331 px ImageNet crops
# (Table 1), and 10 px of 32 in the authors' CIFAR-10 code.
TRANSLATE_FRACTION = {"imagenet": 150 / 331, "cifar10": 10 / 32}
CUTOUT_FRACTION = 60 / 331  # Table 1: a square of up to 60 px of 331.

# Cubuk et al. 2019, arXiv v2 appendix: (op, probability, magnitude) per sub-policy; the
# magnitude of an op that has none is kept as the paper lists it and unused.
AUTOAUGMENT_POLICIES: dict[str, tuple[tuple[tuple[str, float, int], ...], ...]] = {
    "imagenet": (  # Table 9, policy found on reduced ImageNet.
        (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)),
        (("Solarize", 0.6, 5), ("AutoContrast", 0.6, 5)),
        (("Equalize", 0.8, 8), ("Equalize", 0.6, 3)),
        (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
        (("Equalize", 0.4, 7), ("Solarize", 0.2, 4)),
        (("Equalize", 0.4, 4), ("Rotate", 0.8, 8)),
        (("Solarize", 0.6, 3), ("Equalize", 0.6, 7)),
        (("Posterize", 0.8, 5), ("Equalize", 1.0, 2)),
        (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)),
        (("Equalize", 0.6, 8), ("Posterize", 0.4, 6)),
        (("Rotate", 0.8, 8), ("Color", 0.4, 0)),
        (("Rotate", 0.4, 9), ("Equalize", 0.6, 2)),
        (("Equalize", 0.0, 7), ("Equalize", 0.8, 8)),
        (("Invert", 0.6, 4), ("Equalize", 1.0, 8)),
        (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
        (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
        (("Color", 0.8, 8), ("Solarize", 0.8, 7)),
        (("Sharpness", 0.4, 7), ("Invert", 0.6, 8)),
        (("ShearX", 0.6, 5), ("Equalize", 1.0, 9)),
        (("Color", 0.4, 0), ("Equalize", 0.6, 3)),
        (("Equalize", 0.4, 7), ("Solarize", 0.2, 4)),
        (("Solarize", 0.6, 5), ("AutoContrast", 0.6, 5)),
        (("Invert", 0.6, 4), ("Equalize", 1.0, 8)),
        (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
        (("Equalize", 0.8, 8), ("Equalize", 0.6, 3)),
    ),
    "cifar10": (  # Table 8, policy found on reduced CIFAR-10.
        (("Invert", 0.1, 7), ("Contrast", 0.2, 6)),
        (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
        (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
        (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
        (("AutoContrast", 0.5, 8), ("Equalize", 0.9, 2)),
        (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
        (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
        (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
        (("Equalize", 0.6, 5), ("Equalize", 0.5, 1)),
        (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
        (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
        (("Equalize", 0.3, 7), ("AutoContrast", 0.4, 8)),
        (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
        (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
        (("Solarize", 0.5, 2), ("Invert", 0.0, 3)),
        (("Equalize", 0.2, 0), ("AutoContrast", 0.6, 0)),
        (("Equalize", 0.2, 8), ("Equalize", 0.6, 4)),
        (("Color", 0.9, 9), ("Equalize", 0.6, 6)),
        (("AutoContrast", 0.8, 4), ("Solarize", 0.2, 8)),
        (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
        (("Solarize", 0.4, 5), ("AutoContrast", 0.9, 3)),
        (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
        (("AutoContrast", 0.9, 2), ("Solarize", 0.8, 3)),
        (("Equalize", 0.8, 8), ("Invert", 0.1, 3)),
        (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, 1)),
    ),
}

# Cubuk et al. 2020, Sec. 3: the K = 14 transformations of RandAugment.
RANDAUGMENT_OPS = (
    "Identity",
    "AutoContrast",
    "Equalize",
    "Rotate",
    "Solarize",
    "Color",
    "Posterize",
    "Contrast",
    "Brightness",
    "Sharpness",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
)
OPS = RANDAUGMENT_OPS + ("Invert", "Cutout")


def _per_channel(fn):
    return jax.vmap(fn, in_axes=-1, out_axes=-1)


def _gray(image: jax.Array) -> jax.Array:
    """PIL's `convert("L")`: ITU-R 601-2 luma in 16-bit fixed point, as int32 (H, W)."""
    x = image.astype(jnp.int32)
    if image.shape[-1] == 1:
        return x[..., 0]
    return (19595 * x[..., 0] + 38470 * x[..., 1] + 7471 * x[..., 2] + 0x8000) >> 16


def _blend(degenerate: jax.Array, image: jax.Array, factor) -> jax.Array:
    """PIL's `Image.blend(degenerate, image, factor)`: float32 arithmetic, truncated, clipped."""
    d = degenerate.astype(jnp.float32)
    out = d + jnp.float32(factor) * (image.astype(jnp.float32) - d)
    return jnp.clip(jnp.trunc(out), 0, 255).astype(jnp.uint8)


def invert(image: jax.Array) -> jax.Array:
    return 255 - image


def solarize(image: jax.Array, threshold) -> jax.Array:
    """`ImageOps.solarize`: values >= threshold are inverted."""
    return jnp.where(image.astype(jnp.int32) >= threshold, 255 - image, image)


def posterize(image: jax.Array, bits) -> jax.Array:
    """`ImageOps.posterize`: keep the `bits` high bits of every value."""
    shift = 8 - jnp.asarray(bits, jnp.int32)
    return ((image.astype(jnp.int32) >> shift) << shift).astype(jnp.uint8)


def auto_contrast(image: jax.Array) -> jax.Array:
    """`ImageOps.autocontrast` (cutoff 0): each channel's [min, max] stretched to [0, 255]."""

    def channel(x):
        lo, hi = x.min().astype(jnp.int32), x.max().astype(jnp.int32)
        stretched = (x.astype(jnp.int32) - lo) * 255 // jnp.maximum(hi - lo, 1)
        return jnp.where(hi > lo, stretched, x).astype(jnp.uint8)

    return _per_channel(channel)(image)


def equalize(image: jax.Array) -> jax.Array:
    """`ImageOps.equalize`, PIL's histogram equalization per channel.

    With `step = (count - count of the last non-empty bin) // 255`, value i maps to
    `(step // 2 + number of pixels below i) // step`; a channel with `step == 0` (one value, or
    too few pixels) is left unchanged.
    """

    def channel(x):
        hist = jnp.bincount(x.reshape(-1).astype(jnp.int32), length=256)
        last = 255 - jnp.argmax(hist[::-1] > 0)
        step = (hist.sum() - hist[last]) // 255
        safe = jnp.maximum(step, 1)
        lut = jnp.minimum((safe // 2 + jnp.cumsum(hist) - hist) // safe, 255)
        return jnp.where(step > 0, lut[x.astype(jnp.int32)], x).astype(jnp.uint8)

    return _per_channel(channel)(image)


def color(image: jax.Array, factor) -> jax.Array:
    """`ImageEnhance.Color`: blend with the grey (PIL "L") image."""
    return _blend(jnp.broadcast_to(_gray(image)[..., None], image.shape), image, factor)


def contrast(image: jax.Array, factor) -> jax.Array:
    """`ImageEnhance.Contrast`: blend with the grey image's mean, rounded half up."""
    gray = _gray(image)
    mean = (2 * gray.sum() + gray.size) // (2 * gray.size)
    return _blend(jnp.full(image.shape, mean), image, factor)


def brightness(image: jax.Array, factor) -> jax.Array:
    """`ImageEnhance.Brightness`: blend with black."""
    return _blend(jnp.zeros(image.shape), image, factor)


def sharpness(image: jax.Array, factor) -> jax.Array:
    """`ImageEnhance.Sharpness`: blend with PIL's SMOOTH filter (3x3, centre 5, total 13, rounded),
    which leaves the one-pixel border unfiltered."""
    x = image.astype(jnp.int32)
    total = 4 * x[1:-1, 1:-1]
    for dy in range(3):
        for dx in range(3):
            total = total + x[dy : dy + x.shape[0] - 2, dx : dx + x.shape[1] - 2]
    smooth = x.at[1:-1, 1:-1].set((2 * total + 13) // 26)
    return _blend(smooth, image, factor)


def affine(image: jax.Array, matrix, fill: int = FILL) -> jax.Array:
    """`Image.transform(size, AFFINE, matrix, NEAREST, fillcolor=fill)`.

    `matrix = (a, b, c, d, e, f)` maps each output pixel centre (x, y) to the input point
    (a x + b y + c, d x + e y + f), as PIL does; points outside the image take `fill`.
    """
    h, w, _ = image.shape
    a, b, c, d, e, f = matrix
    ys, xs = jnp.meshgrid(jnp.arange(h) + 0.5, jnp.arange(w) + 0.5, indexing="ij")
    src_x = jnp.floor(a * xs + b * ys + c).astype(jnp.int32)
    src_y = jnp.floor(d * xs + e * ys + f).astype(jnp.int32)
    inside = (src_x >= 0) & (src_x < w) & (src_y >= 0) & (src_y < h)
    out = image[jnp.clip(src_y, 0, h - 1), jnp.clip(src_x, 0, w - 1)]
    return jnp.where(inside[..., None], out, jnp.asarray(fill, image.dtype))


def _rotation(degrees, height: int, width: int):
    """PIL's affine coefficients of `Image.rotate(degrees)` about the centre (w / 2, h / 2)."""
    t = -jnp.deg2rad(degrees)
    a, b, d, e = jnp.cos(t), jnp.sin(t), -jnp.sin(t), jnp.cos(t)
    cx, cy = width / 2, height / 2
    return (a, b, cx - a * cx - b * cy, d, e, cy - d * cx - e * cy)


def rotate(image: jax.Array, degrees, fill: int = FILL) -> jax.Array:
    """`Image.rotate(degrees)`: counter-clockwise about the centre (w / 2, h / 2)."""
    return affine(image, _rotation(degrees, image.shape[0], image.shape[1]), fill)


GEOMETRIC = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")


def _geometric_matrix(name: str, level, rng, height: int, width: int, translate_fraction: float):
    """`affine`'s coefficients for geometric op `name` at `level`, with a random sign."""
    s = jnp.asarray(level, jnp.float32) / MAX_LEVEL
    v = jnp.where(jax.random.bernoulli(rng), -s, s)
    if name == "Rotate":
        return jnp.stack(_rotation(v * 30.0, height, width))
    row = {
        "ShearX": (1.0, 0.3 * v, 0.0, 0.0, 1.0, 0.0),
        "ShearY": (1.0, 0.0, 0.0, 0.3 * v, 1.0, 0.0),
        "TranslateX": (1.0, 0.0, v * translate_fraction * width, 0.0, 1.0, 0.0),
        "TranslateY": (1.0, 0.0, 0.0, 0.0, 1.0, v * translate_fraction * height),
    }[name]
    return jnp.stack([jnp.asarray(x, jnp.float32) for x in row])


def apply_op(
    name: str, image: jax.Array, level, rng: jax.Array, translate_fraction: float = 150 / 331
) -> jax.Array:
    """Operation `name` on one uint8 (H, W, C) image at magnitude `level` (0..10 scale).

    Ranges (Cubuk et al. 2019, Table 1): shear 0.3, rotate 30 degrees, translate
    `translate_fraction` of the side (each with a random sign), Solarize threshold 0..256,
    Posterize 4..8 bits, enhancement factors 0.1..1.9, Cutout side up to 60/331 of the short
    side (fill 128).
    """
    h, w, _ = image.shape
    s = jnp.asarray(level, jnp.float32) / MAX_LEVEL
    enhance = dict(Color=color, Contrast=contrast, Brightness=brightness, Sharpness=sharpness)
    if name == "Identity":
        return image
    if name == "AutoContrast":
        return auto_contrast(image)
    if name == "Equalize":
        return equalize(image)
    if name == "Invert":
        return invert(image)
    if name == "Solarize":
        return solarize(image, jnp.floor(s * 256).astype(jnp.int32))
    if name == "Posterize":
        return posterize(image, jnp.clip(4 + jnp.floor(s * 4).astype(jnp.int32), 0, 8))
    if name in enhance:
        return enhance[name](image, s * 1.8 + 0.1)
    if name in GEOMETRIC:
        return affine(image, _geometric_matrix(name, level, rng, h, w, translate_fraction))
    if name == "Cutout":
        side = jnp.floor(s * CUTOUT_FRACTION * min(h, w)).astype(jnp.int32)
        return augment.cutout(rng, image[None], side, fill=FILL)[0]
    raise unknown_name("augmentation op", name, OPS)


def _switch(op, names, image, level, rng, translate_fraction: float) -> jax.Array:
    """`apply_op(names[op], ...)` for a traced index `op`.

    Under vmap every branch of a switch is computed, so the geometric ops share one resampling:
    one switch picks the pixel op (Identity for a geometric one), another the affine matrix
    (the identity for the rest, which `affine` reproduces exactly).
    """
    pixel = [n if n not in GEOMETRIC else "Identity" for n in names]
    branches = [
        functools.partial(apply_op, n, translate_fraction=translate_fraction) for n in pixel
    ]
    image = jax.lax.switch(op, branches, image, level, rng)
    if not set(names) & set(GEOMETRIC):
        return image
    h, w, _ = image.shape
    identity = jnp.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])

    def matrix(name):
        if name not in GEOMETRIC:
            return lambda level, rng: identity
        return functools.partial(
            _geometric_matrix, name, height=h, width=w, translate_fraction=translate_fraction
        )

    return affine(image, jax.lax.switch(op, [matrix(n) for n in names], level, rng))


def _check_images(images: jax.Array) -> None:
    if images.dtype != jnp.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise UserError(
            f"AutoAugment/RandAugment take uint8 NHWC images with 1 or 3 channels, got "
            f"{images.dtype} {images.shape}; apply them before `normalize`"
        )


def auto_augment(
    rng: jax.Array,
    images: jax.Array,
    policy: str = "imagenet",
    translate_fraction: float | None = None,
) -> jax.Array:
    """AutoAugment (Cubuk et al. 2019): each image takes one of the policy's 25 sub-policies
    uniformly and applies its two operations, each with its probability and magnitude.

    `policy` is a key of `AUTOAUGMENT_POLICIES`; `translate_fraction` defaults to that policy's
    entry in `TRANSLATE_FRACTION`.
    """
    if policy not in AUTOAUGMENT_POLICIES:
        raise unknown_name("AutoAugment policy", policy, AUTOAUGMENT_POLICIES)
    _check_images(images)
    table = AUTOAUGMENT_POLICIES[policy]
    if translate_fraction is None:
        translate_fraction = TRANSLATE_FRACTION[policy]
    # Under vmap every branch of a switch is computed: only the policy's ops are branches.
    names = sorted({op for sub in table for op, _, _ in sub} | {"Identity"})
    index = {name: i for i, name in enumerate(names)}
    op_ids = jnp.array([[index[op] for op, _, _ in sub] for sub in table], jnp.int32)
    probs = jnp.array([[p for _, p, _ in sub] for sub in table], jnp.float32)
    levels = jnp.array([[m for _, _, m in sub] for sub in table], jnp.float32)

    def one(key, image):
        draw_rng, *op_rngs = jax.random.split(key, 3)
        u = jax.random.uniform(draw_rng, (3,))  # sub-policy, then whether to apply each op
        sub = jnp.minimum(jnp.floor(u[0] * len(table)).astype(jnp.int32), len(table) - 1)
        for j in range(2):
            op = jnp.where(u[1 + j] < probs[sub, j], op_ids[sub, j], index["Identity"])
            image = _switch(op, names, image, levels[sub, j], op_rngs[j], translate_fraction)
        return image

    return jax.vmap(one)(jax.random.split(rng, images.shape[0]), images)


def rand_augment(
    rng: jax.Array,
    images: jax.Array,
    num_ops: int = 2,
    magnitude: float = 9.0,
    translate_fraction: float = 150 / 331,
) -> jax.Array:
    """RandAugment (Cubuk et al. 2020, Fig. 2): `num_ops` operations drawn uniformly (with
    replacement) from the 14 of `RANDAUGMENT_OPS`, all at `magnitude`, each image its own draw.

    `magnitude` is on AutoAugment's 0..10 scale of the TF reference (`_MAX_LEVEL = 10`; the paper
    uses N = 2, M = 9 for ResNet-50 on ImageNet); larger values extrapolate linearly, as in the
    paper's studies up to 30, with Posterize clipped at 8 bits.
    """
    _check_images(images)
    if num_ops < 0 or magnitude < 0:
        raise UserError(
            f"rand_augment needs num_ops >= 0 and magnitude >= 0, got {num_ops}, "
            f"{magnitude}; pass non-negative values"
        )

    def one(key, image):
        draw_rng, *op_rngs = jax.random.split(key, 1 + num_ops)
        picks = jnp.floor(jax.random.uniform(draw_rng, (num_ops,)) * len(RANDAUGMENT_OPS))
        for pick, op_rng in zip(picks.astype(jnp.int32), op_rngs, strict=True):
            image = _switch(pick, RANDAUGMENT_OPS, image, magnitude, op_rng, translate_fraction)
        return image

    return jax.vmap(one)(jax.random.split(rng, images.shape[0]), images)
