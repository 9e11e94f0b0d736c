"""On-device augmentation, run inside the jitted train step on uint8 NHWC batches."""

import jax
import jax.numpy as jnp


def random_crop_flip(rng: jax.Array, images: jax.Array, padding: int, flip: bool) -> jax.Array:
    """Zero-pad by `padding`, take a random crop of the original size, flip half horizontally.

    The standard CIFAR augmentation of He et al. 2016, Sec. 4.2.
    """
    n, h, w, _ = images.shape
    crop_rng, flip_rng = jax.random.split(rng)
    if padding:
        padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
        offsets = jax.random.randint(crop_rng, (n, 2), 0, 2 * padding + 1)

        def crop(image, offset):
            return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (h, w, image.shape[-1]))

        images = jax.vmap(crop)(padded, offsets)
    if flip:
        do_flip = jax.random.bernoulli(flip_rng, 0.5, (n, 1, 1, 1))
        images = jnp.where(do_flip, images[:, :, ::-1, :], images)
    return images


def normalize(images: jax.Array, mean, std, dtype=jnp.float32) -> jax.Array:
    """uint8 images to `(x - mean) / std` per channel; mean and std in 0..255 units."""
    x = images.astype(jnp.float32)
    x = (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
    return x.astype(dtype)
