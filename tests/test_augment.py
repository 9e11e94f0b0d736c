"""On-device augmentation: crops, erasing, mixing, AutoAugment / RandAugment ops, TTA."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from cvjax import data
from cvjax.data import augment, tta
from cvjax.data import autoaugment as aa
from cvjax.errors import UserError

# Compiles dominate this file's time: each test jits one function that covers several cases,
# since dispatching the many small ops eagerly is slower still.
KEY = jax.random.key(0)


def _random_images(n=4, h=12, w=16, c=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)


# --- RandomResizedCrop ------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _boxes(rng, num, height, width, scale):
    return augment.random_resized_crop_boxes(rng, num, height, width, scale)


def test_rrc_boxes_in_bounds_with_scale_and_ratio():
    h, w = 224, 200
    boxes = np.asarray(_boxes(KEY, 2000, h, w, (0.08, 1.0)))
    top, left, bh, bw = boxes.T
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + bh <= h).all() and (left + bw <= w).all()
    area, ratio = bh * bw / (h * w), bw / bh
    # Sides are rounded to whole pixels (>= 50 px here), so allow 3% beyond the ranges.
    assert area.min() >= 0.08 * 0.97 and area.max() <= 1.0
    assert ratio.min() >= 0.75 * 0.97 and ratio.max() <= 4 / 3 * 1.03
    assert area.min() < 0.1 and area.max() > 0.9  # the whole range is drawn
    # No area fraction above 1 fits: torchvision's fallback is a centre crop at the widest ratio.
    np.testing.assert_array_equal(_boxes(KEY, 3, 10, 40, (2.0, 3.0)), [[0, 13, 10, 13]] * 3)


@jax.jit
def _crops(rng, images):
    n, h, w, _ = images.shape
    return (
        augment.random_resized_crop(rng, images, scale=(1.0, 1.0), ratio=(w / h, w / h)),
        augment.random_resized_crop(rng, images, scale=(0.2, 0.5), out_size=(20, 16)),
        augment.random_resized_crop_boxes(rng, n, h, w, scale=(0.2, 0.5)),
    )


def test_rrc_resizes_the_sampled_box():
    x = _random_images(n=3, h=24, w=18, c=1)
    whole, out, boxes = jax.tree.map(np.asarray, _crops(KEY, jnp.asarray(x)))
    np.testing.assert_array_equal(whole, x)  # the whole image at its own size
    chex.assert_shape(out, (3, 20, 16, 1))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, _crops(KEY, jnp.asarray(x))[1])
    assert (np.asarray(_crops(jax.random.key(1), jnp.asarray(x))[1]) != out).any()
    for image, result, (top, left, bh, bw) in zip(x, out, boxes, strict=True):
        crop = Image.fromarray(image[top : top + bh, left : left + bw, 0].astype(np.float32))
        expected = np.round(np.asarray(crop.resize((16, 20), Image.BILINEAR)))[..., None]
        # Away from the crop's edge the filter only sees pixels inside the box.
        inner = np.abs(result[3:-3, 3:-3].astype(int) - expected[3:-3, 3:-3])
        assert inner.max() <= 1


# --- Cutout and random erasing ----------------------------------------------------------------


def test_cutout_square_and_mean_area():
    n, size, length = 2000, 16, 6
    x = jnp.full((n, size, size, 1), 255, jnp.uint8)
    out = np.asarray(jax.jit(augment.cutout, static_argnums=2)(KEY, x, length))
    assert set(np.unique(out)) <= {0, 255}
    erased = out[..., 0] == 0
    rows, cols = erased.any(2).sum(1), erased.any(1).sum(1)
    np.testing.assert_array_equal(erased.sum((1, 2)), rows * cols)  # one axis-aligned box
    assert rows.max() == length and cols.max() == length
    # Centres are uniform over the pixels and the square is clipped: expected side per axis.
    c = np.arange(size)
    side = np.clip(c + length // 2, 0, size) - np.clip(c - length // 2, 0, size)
    assert abs(erased.sum((1, 2)).mean() - side.mean() ** 2) < 0.03 * side.mean() ** 2


@jax.jit
def _erase(rng, images, floats):
    return (
        augment.random_erasing(rng, images, prob=0.5, fill="zero"),
        augment.random_erasing(rng, images[:64], prob=1.0),
        augment.random_erasing(rng, floats, prob=1.0),
    )


def test_random_erasing_area_ratio_probability_and_fill():
    n, h, w = 1000, 32, 32
    x = jnp.full((n, h, w, 1), 255, jnp.uint8)
    zero, random, floats = jax.tree.map(np.asarray, _erase(KEY, x, jnp.full((64, 16, 16, 3), 9.0)))
    out = zero[..., 0] == 0
    hit = out.any((1, 2))
    assert abs(hit.mean() - 0.5) < 0.06
    rows, cols = out[hit].any(2).sum(1), out[hit].any(1).sum(1)
    np.testing.assert_array_equal(out[hit].sum((1, 2)), rows * cols)
    area = rows * cols / (h * w)
    assert area.min() >= 0.015 and area.max() <= 0.42  # (0.02, 0.4) up to pixel rounding
    assert (rows / cols).min() >= 0.3 * 0.75 and (rows / cols).max() <= 3.4 / 0.75
    assert abs(area.mean() - 0.21) < 0.03  # uniform area fraction, mean (0.02 + 0.4) / 2
    changed = random[random != 255]
    assert changed.size and changed.std() > 40  # uniform 0..255 values, not a constant
    values = floats[floats != 9.0]
    assert abs(values.mean()) < 0.2 and abs(values.std() - 1) < 0.2  # standard normal
    with pytest.raises(UserError, match="fill"):
        augment.random_erasing(KEY, x, fill="mean")


# --- Mixup and CutMix -------------------------------------------------------------------------


def _labelled_batch(n=4, size=8):
    """Image i is the constant i + 1, so every pixel says which example it came from."""
    return jnp.broadcast_to(jnp.arange(1.0, n + 1)[:, None, None, None], (n, size, size, 2))


@pytest.fixture(scope="module")
def mixes():
    # One call covers both: each example draws Mixup (Beta(0.4, 0.4)) or CutMix (Beta(1, 1)).
    x = _labelled_batch(n=4000)
    mix = functools.partial(
        augment.mix, mode="both", alpha=0.4, prob=0.8, switch_prob=0.4, cutmix_alpha=1.0
    )
    out, partner, lam = jax.jit(mix, static_argnames="per_example")(KEY, x, per_example=True)
    x, out, partner, lam = map(np.asarray, (x, out, partner, lam))
    from_pair = ((out == x) | (out == x[partner])).all((1, 2, 3))
    return x, out, partner, lam, from_pair


def test_mixup_lam_is_beta_and_mixes_with_partner(mixes):
    x, out, partner, lam, from_pair = mixes
    np.testing.assert_array_equal(partner, np.arange(len(x))[::-1])
    mixed = ~from_pair  # Mixup (almost surely) leaves no pixel equal to either image
    assert abs(mixed.mean() - 0.8 * 0.6) < 0.03  # prob * (1 - switch_prob)
    mean, var = 0.5, 0.4 * 0.4 / (0.8**2 * 1.8)  # Beta(0.4, 0.4)
    assert abs(lam[mixed].mean() - mean) < 0.03 and abs(lam[mixed].var() - var) < 0.012
    weight = lam[:, None, None, None]
    expected = weight * x + (1 - weight) * x[partner]
    np.testing.assert_allclose(out[mixed], expected[mixed], rtol=1e-6)


def _check_cutmix(out, own_images, partner_images, lam):
    own = (out == own_images).all(-1)
    pasted = (out == partner_images).all(-1)
    assert (own | pasted).all()  # each pixel is the image's own or its partner's
    np.testing.assert_allclose(own.mean((1, 2)), lam, atol=1e-6)
    rows, cols = pasted.any(2).sum(1), pasted.any(1).sum(1)
    np.testing.assert_array_equal(pasted.sum((1, 2)), rows * cols)  # one box


def test_cutmix_lam_is_the_unpasted_area_fraction(mixes):
    x, out, partner, lam, from_pair = mixes
    _check_cutmix(out[from_pair], x[from_pair], x[partner][from_pair], lam[from_pair])
    cut = lam[from_pair & (lam < 1)]
    # Boxes are empty when int(8 * sqrt(1 - lam)) < 2, i.e. lam > 15 / 16.
    assert abs(len(cut) / len(x) - 0.8 * 0.4 * 15 / 16) < 0.03
    assert cut.min() < 0.5 and len(np.unique(cut)) > 10  # 8x8 boxes: sides in steps of 2
    with pytest.raises(UserError, match="mix mode"):
        augment.mix(KEY, x, "mixcut", 1.0)
    with pytest.raises(UserError, match="alpha"):
        augment.mix(KEY, x, "mixup", 0.0)


# --- AutoAugment operations against PIL -------------------------------------------------------


def _pil(image):
    return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def _from_pil(image, channels):
    array = np.asarray(image)
    return array[..., None] if channels == 1 else array


def _photometric_cases():
    rng = np.random.default_rng(1)
    digits = data.load("digits", "train").images[:4]  # real 8x8 grey images
    cases = [digits[i] for i in range(4)]
    for channels in (1, 3):
        lo, hi = rng.integers(0, 60), rng.integers(150, 257)
        cases.append(rng.integers(lo, hi, (8, 8, channels), dtype=np.uint8))
        cases.append((rng.integers(0, 256, (8, 8, channels)) // 37 * 37).astype(np.uint8))
    return cases


@jax.jit
def _photometric(image, factor):
    return {
        "equalize": aa.equalize(image),
        "autocontrast": aa.auto_contrast(image),
        "invert": aa.invert(image),
        "solarize": aa.solarize(image, 100),
        "posterize": aa.posterize(image, 3),
        "color": aa.color(image, factor),
        "contrast": aa.contrast(image, factor),
        "brightness": aa.brightness(image, factor),
        "sharpness": aa.sharpness(image, factor),
    }


def test_photometric_ops_match_pil():
    for image in _photometric_cases():
        channels, pil = image.shape[-1], _pil(image)
        for factor in (0.1, 0.7, 1.9):
            ours = jax.tree.map(np.asarray, _photometric(jnp.asarray(image), factor))
            theirs = {
                "equalize": ImageOps.equalize(pil),
                "invert": ImageOps.invert(pil),
                "solarize": ImageOps.solarize(pil, 100),
                "posterize": ImageOps.posterize(pil, 3),
                "autocontrast": ImageOps.autocontrast(pil),
                "color": ImageEnhance.Color(pil).enhance(factor),
                "contrast": ImageEnhance.Contrast(pil).enhance(factor),
                "brightness": ImageEnhance.Brightness(pil).enhance(factor),
                "sharpness": ImageEnhance.Sharpness(pil).enhance(factor),
            }
            for i, (name, expected) in enumerate(theirs.items()):
                diff = np.abs(ours[name].astype(int) - _from_pil(expected, channels))
                # The first four are exact integer maps. PIL's autocontrast scales in float64
                # and its blends round in float32, so allow one level on a few pixels.
                assert diff.max() <= (0 if i < 4 else 1), (name, factor)
                assert (diff > 0).mean() <= 0.05, (name, factor)


def _board():
    y, x = np.mgrid[:24, :20]
    return np.stack([((y // 3 + x // 3) % 2 * 200 + 20), x * 10, y * 9], -1).astype(np.uint8)


_affine = jax.jit(aa.affine)
_rotate = jax.jit(aa.rotate)


def test_shear_translate_rotate_match_pil():
    board = _board()
    pil, fill = _pil(board), (128,) * 3
    for matrix in [
        (1, 0.3, 0, 0, 1, 0),
        (1, 0, 0, -0.21, 1, 0),
        (1, 0, 3.7, 0, 1, 0),
        (1, 0, 0, 0, 1, -5),
    ]:
        expected = pil.transform((20, 24), Image.AFFINE, matrix, Image.NEAREST, fillcolor=fill)
        ours = np.asarray(_affine(jnp.asarray(board), jnp.asarray(matrix, jnp.float32)))
        assert (ours != np.asarray(expected)).any(-1).mean() <= 0.01, matrix
    for degrees in (17.0, -29.0):
        expected = np.asarray(pil.rotate(degrees, fillcolor=fill))
        assert (np.asarray(_rotate(jnp.asarray(board), degrees)) != expected).any(-1).mean() <= 0.01


@jax.jit
def _levels(image, rng):
    op = functools.partial(aa.apply_op, image=image, rng=rng)
    big = jnp.zeros((331, 331, 1), jnp.uint8)
    return {
        "solarize5": (op("Solarize", level=5), aa.solarize(image, 128)),
        "posterize10": (op("Posterize", level=10), image),  # 8 bits
        "posterize5": (op("Posterize", level=5), aa.posterize(image, 6)),
        "brightness5": (op("Brightness", level=5), aa.brightness(image, 1.0)),
        "rotate10": (op("Rotate", level=10), aa.rotate(image, 30.0), aa.rotate(image, -30.0)),
        "translate10": (
            op("TranslateX", level=10, translate_fraction=0.3),
            aa.affine(image, (1, 0, 3.0, 0, 1, 0)),
            aa.affine(image, (1, 0, -3.0, 0, 1, 0)),
        ),
        "cutout": aa.apply_op("Cutout", big, 10, rng),
    }


def test_levels_map_onto_the_paper_ranges():
    image = jnp.asarray(_random_images(n=1, h=10, w=10)[0])
    results = jax.tree.map(np.asarray, _levels(image, KEY))
    for name in ("solarize5", "posterize10", "posterize5", "brightness5"):
        np.testing.assert_array_equal(*results[name], err_msg=name)
    for name in ("rotate10", "translate10"):
        ours, plus, minus = results[name]
        assert (ours == plus).all() or (ours == minus).all(), name
    assert 0 < (results["cutout"] == 128).sum() <= 60 * 60  # up to 60 px of 331
    with pytest.raises(UserError, match="augmentation op"):
        aa.apply_op("Shear", image, 1, KEY)


# --- Policies and entry points ----------------------------------------------------------------


def test_policy_tables():
    assert set(aa.AUTOAUGMENT_POLICIES) == {"imagenet", "cifar10"}
    for table in aa.AUTOAUGMENT_POLICIES.values():
        assert len(table) == 25
        for sub in table:
            assert len(sub) == 2
            for name, prob, magnitude in sub:
                assert name in aa.OPS and 0 <= prob <= 1 and 0 <= magnitude <= 10
    assert len(set(aa.RANDAUGMENT_OPS)) == 14 and len(set(aa.OPS)) == 16


def test_auto_augment_applies_probabilities(monkeypatch):
    # Solarize at level 0 inverts every value, so applying it would undo the Invert.
    sub = (("Invert", 1.0, 0), ("Solarize", 0.0, 0))
    monkeypatch.setitem(aa.AUTOAUGMENT_POLICIES, "test", (sub,))
    x = jnp.asarray(_random_images(n=4, h=8, w=8))
    out = jax.jit(aa.auto_augment, static_argnums=(2, 3))(KEY, x, "test", 0.1)
    np.testing.assert_array_equal(out, 255 - x)


@pytest.mark.parametrize("policy", ["imagenet", "cifar10"])
def test_auto_augment_jit_shapes_determinism(policy):
    digits = jnp.asarray(data.load("digits", "train").images[:8])
    fn = jax.jit(aa.auto_augment, static_argnums=2)
    out = fn(KEY, digits, policy)
    chex.assert_shape(out, digits.shape)
    assert out.dtype == jnp.uint8
    np.testing.assert_array_equal(out, fn(KEY, digits, policy))
    assert (np.asarray(out) != np.asarray(fn(jax.random.key(7), digits, policy))).any()


def test_entry_point_errors():
    x = jnp.zeros((2, 8, 8, 3), jnp.uint8)
    with pytest.raises(UserError, match="policy"):
        aa.auto_augment(KEY, x, "svhn")
    with pytest.raises(UserError, match="uint8"):
        aa.rand_augment(KEY, x.astype(jnp.float32))
    with pytest.raises(UserError, match="magnitude"):
        aa.rand_augment(KEY, x, 2, -1.0)


# --- The train-step pipeline and TTA ----------------------------------------------------------


@jax.jit
def _train_augment(rng, images):
    keys = jax.random.split(rng, 3)
    images = augment.random_resized_crop(keys[0], images)
    images = aa.rand_augment(keys[1], images, 2, 9.0)
    x = augment.normalize(images, (127.0,) * 3, (64.0,) * 3)
    return images, augment.mix(keys[2], x, "both", 1.0)


def test_rand_augment_and_batch_mix_in_a_jitted_pipeline():
    x = jnp.asarray(_random_images(n=8, h=8, w=8))
    images, (mixed, partner, lam) = _train_augment(KEY, x)
    chex.assert_shape([images, mixed, partner, lam], [x.shape, x.shape, (8,), (8,)])
    assert images.dtype == jnp.uint8 and mixed.dtype == jnp.float32
    assert partner.dtype == jnp.int32 and lam.dtype == jnp.float32
    assert (np.asarray(lam) == np.asarray(lam)[0]).all()  # one lam per batch by default
    np.testing.assert_array_equal(images, _train_augment(KEY, x)[0])
    assert (np.asarray(_train_augment(jax.random.key(3), x)[0]) != np.asarray(images)).any()


def _mean_pool_predict(weights):
    return lambda x: x.mean((1, 2)) @ weights  # invariant to horizontal flips


def test_tta_flip_invariant_predict_equals_plain():
    predict = _mean_pool_predict(jax.random.normal(KEY, (3, 5)))
    x = jax.random.normal(jax.random.key(1), (4, 16, 16, 3))

    @jax.jit
    def views(x):
        flipped = tta.tta_logits(predict, x, flip=True)
        return flipped, tta.tta_logits(predict, x, crops=10, scales=(0.75, 1.25))

    flipped, ten = views(x)
    np.testing.assert_allclose(flipped, jax.nn.log_softmax(predict(x)), atol=1e-6)
    chex.assert_shape(ten, (4, 5))
    np.testing.assert_allclose(jnp.exp(ten).sum(-1), 1.0, rtol=1e-5)


def test_tta_views():
    x = jax.random.normal(KEY, (2, 8, 8, 1))
    seen = []

    def predict(view):
        seen.append(view.shape)
        return view.mean((1, 2))

    @jax.jit
    def views(x):
        tta.tta_logits(predict, x, flip=True, crops=5, scales=(0.75, 1.5))
        return tta.five_crops(x, 0.5)

    crops = np.asarray(views(x))
    assert seen == [(2, 8, 8, 1), (2, 6, 6, 1), (2, 6, 6, 1), (2, 12, 12, 1), (2, 12, 12, 1)]
    chex.assert_shape(crops, (5, 2, 8, 8, 1))
    for crop, (top, left) in zip(crops, [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2)], strict=True):
        part = Image.fromarray(np.asarray(x[0, top : top + 4, left : left + 4, 0]))
        expected = np.asarray(part.resize((8, 8), Image.BILINEAR))
        np.testing.assert_allclose(crop[0, ..., 0], expected, atol=1e-4)
    with pytest.raises(UserError, match="crops"):
        tta.tta_logits(predict, x, crops=3)
