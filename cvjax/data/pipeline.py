"""The augmentation pipeline of a config, as static data the jitted steps close over.

Training, on a uint8 NHWC batch inside the step: random-resized crop or crop-after-padding, flip,
AutoAugment or RandAugment (on uint8), then normalization, cutout, random erasing, and mixup /
CutMix on the normalized batch. Evaluation: optional test-time augmentation (flip,
multi-crop, multi-scale), averaging the views' probabilities.
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections

from cvjax.data import augment, autoaugment, tta
from cvjax.errors import UserError


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """The training augmentations beyond crop-after-padding and flip (see `base_config`)."""

    random_resized_crop: bool = False
    crop_pad_mode: str = "constant"  # Or "reflect".
    alternating_flip: bool = False  # Jordan 2024: each half of the data flipped every other epoch.
    rrc_scale: tuple[float, float] = (0.08, 1.0)
    rrc_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    auto_augment: str = ""
    rand_augment_n: int = 0
    rand_augment_m: int = 9
    cutout: int = 0
    random_erasing: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0
    switch_prob: float = 0.5

    @property
    def mixes(self) -> bool:
        return bool(self.mixup_alpha or self.cutmix_alpha)


@dataclasses.dataclass(frozen=True)
class TTAConfig:
    flip: bool = False
    crops: int = 0
    crop_fraction: float = 0.875
    scales: tuple[float, ...] = ()
    translate: int = 0

    @property
    def active(self) -> bool:
        return bool(self.flip or self.crops or self.scales or self.translate)


def augment_config(c: ml_collections.ConfigDict, mixing_allowed: bool = True) -> AugmentConfig:
    """`config.augment` as an AugmentConfig; unknown policies are a one-line error."""
    fields = {f.name for f in dataclasses.fields(AugmentConfig)}
    values = {k: (tuple(v) if isinstance(v, list | tuple) else v) for k, v in c.items()}
    result = AugmentConfig(**{k: v for k, v in values.items() if k in fields})
    if result.auto_augment and result.auto_augment not in autoaugment.AUTOAUGMENT_POLICIES:
        raise UserError(
            f"unknown AutoAugment policy {result.auto_augment!r}; set --config.augment."
            f"auto_augment to one of {', '.join(sorted(autoaugment.AUTOAUGMENT_POLICIES))}"
        )
    if result.auto_augment and result.rand_augment_n:
        raise UserError("use either augment.auto_augment or augment.rand_augment_n, not both")
    if result.crop_pad_mode not in augment.PAD_MODES:
        raise UserError(
            f"augment.crop_pad_mode={result.crop_pad_mode!r}; use one of {augment.PAD_MODES}"
        )
    if result.alternating_flip and c.get("flip", False):
        raise UserError(
            "augment.alternating_flip replaces the random flip; set --config.augment.flip=False"
        )
    if result.mixes and not mixing_allowed:
        raise UserError("mixup/cutmix do not apply to embedding tasks; set their alphas to 0")
    return result


def tta_config(c: ml_collections.ConfigDict | None, classification: bool = True) -> TTAConfig:
    if c is None:
        return TTAConfig()
    result = TTAConfig(
        flip=bool(c.get("flip", False)),
        crops=int(c.get("crops", 0)),
        crop_fraction=float(c.get("crop_fraction", 0.875)),
        scales=tuple(float(s) for s in c.get("scales", ())),
        translate=int(c.get("translate", 0)),
    )
    if result.crops not in (0, 5, 10):
        raise UserError(f"tta.crops={result.crops}; use 0, 5 or 10")
    if result.translate < 0 or (result.translate and result.crops):
        raise UserError(
            f"tta.translate={result.translate} must be >= 0 and goes without tta.crops; fix one"
        )
    if result.active and not classification:
        raise UserError(
            "test-time augmentation averages class probabilities: set tta for "
            "classification tasks only"
        )
    return result


def train_images(
    rng: jax.Array,
    images: jax.Array,
    cfg: AugmentConfig,
    crop_padding: int,
    flip: bool,
    mean,
    std,
    dtype=jnp.float32,
    index: jax.Array | None = None,
    epoch: jax.Array | int = 0,
    example_rng: jax.Array | None = None,
) -> jax.Array:
    """A uint8 training batch, augmented and normalized to `dtype`.

    `index` (the examples' dataset positions), `epoch` and `example_rng` (a key fixed for the
    whole run) are needed by `cfg.alternating_flip` only.
    """
    crop_rng, flip_rng, policy_rng, cutout_rng, erase_rng = jax.random.split(rng, 5)
    if cfg.alternating_flip:
        if index is None or example_rng is None:
            raise UserError(
                "augment.alternating_flip needs in-memory data (example indices); set "
                "--config.stream=False"
            )
        images = augment.alternating_flip(example_rng, images, index, epoch)
    if cfg.random_resized_crop:
        images = augment.random_resized_crop(crop_rng, images, cfg.rrc_scale, cfg.rrc_ratio)
        images = augment.random_crop_flip(flip_rng, images, 0, flip)
    elif crop_padding or flip:
        # The key of the original crop-and-flip pipeline, so default configs are unchanged.
        images = augment.random_crop_flip(rng, images, crop_padding, flip, cfg.crop_pad_mode)
    if cfg.auto_augment:
        images = autoaugment.auto_augment(policy_rng, images, cfg.auto_augment)
    elif cfg.rand_augment_n:
        images = autoaugment.rand_augment(
            policy_rng, images, cfg.rand_augment_n, cfg.rand_augment_m
        )
    x = augment.normalize(images, mean, std, dtype)
    if cfg.cutout:  # On the normalized batch: the square is filled with the dataset mean.
        x = augment.cutout(cutout_rng, x, cfg.cutout)
    if cfg.random_erasing:
        x = augment.random_erasing(erase_rng, x, cfg.random_erasing)
    return x


def mix(rng: jax.Array, x: jax.Array, cfg: AugmentConfig):
    """Mixup / CutMix of a normalized batch: (images, partner index, lam)."""
    if cfg.mixup_alpha and cfg.cutmix_alpha:
        mode = "both"
    else:
        mode = "cutmix" if cfg.cutmix_alpha else "mixup"
    return augment.mix(
        rng,
        x,
        mode,
        cfg.mixup_alpha or cfg.cutmix_alpha,
        prob=cfg.mix_prob,
        switch_prob=cfg.switch_prob,
        cutmix_alpha=cfg.cutmix_alpha or None,
    )


def tta_outputs(predict: Callable, x: jax.Array, cfg: TTAConfig) -> jax.Array:
    """Log mean probabilities over the test-time views of a normalized batch."""
    return tta.tta_logits(
        predict,
        x,
        flip=cfg.flip,
        crops=cfg.crops,
        crop_fraction=cfg.crop_fraction,
        scales=cfg.scales,
        translate=cfg.translate,
    )
