"""airbench94: the small CIFAR-10 network of Keller Jordan's fastest-training recipe.

Jordan 2024, "94% on CIFAR-10 in 3.29 Seconds on a Single GPU" (arXiv:2404.00498; reference code
KellerJordan/cifar10-airbench, airbench94.py). A frozen 2x2 whitening convolution (no padding):
the eigenvectors of the training images' 2x2-patch covariance, divided by the square roots of
their eigenvalues, and their negatives, with a learnable bias; GELU; three groups (conv3x3 ->
max pool 2 -> BatchNorm -> GELU -> conv3x3 -> BatchNorm -> GELU) of widths 64, 256, 256; a global
max pool; a bias-free linear head whose logits are scaled by 1/9. BatchNorm has no scale (the
reference freezes its weight at 1), momentum 0.6 (PyTorch's 0.4) and eps 1e-12. Convolutions
start as PyTorch's default initialization with an identity (Dirac) kernel in the first
`in_channels` filters, an implicit residual.

The whitening kernel is data: `whitening_kernel` computes it from training images and
`init_whitening` writes it into a model's params (`config.init_whitening`, cvjax/train/loop.py);
the recipe then freezes it (`config.freeze`).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cvjax.errors import UserError
from cvjax.models.layers import Classifier, Dtype, batch_norm, conv, model_input
from cvjax.models.registry import register

# PyTorch's default for Conv2d and Linear: kaiming_uniform(a=sqrt(5)), i.e. U(+-1/sqrt(fan_in)).
torch_default_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")
WHITEN = "whiten"  # The params key of the whitening convolution.


def dirac_init(base: nn.initializers.Initializer = torch_default_init):
    """`base`, with the first min(in, out) filters replaced by identity kernels (torch.nn.init.
    dirac_ on them): output channel i starts as a copy of input channel i."""

    def init(key, shape, dtype=jnp.float32):
        kernel = base(key, shape, dtype)
        kh, kw, cin, cout = shape
        n = min(cin, cout)
        identity = jnp.zeros((kh, kw, cin, n), dtype).at[kh // 2, kw // 2].set(jnp.eye(cin, n))
        return kernel.at[..., :n].set(identity)

    return init


def _conv(
    features: int, kernel: int, dtype: Dtype, name: str, padding=None, use_bias: bool = False
) -> nn.Conv:
    """A stride-1 convolution, Dirac-initialized, PyTorch's padding (k // 2; "VALID": none)."""
    return conv(
        features,
        kernel,
        dtype=dtype,
        use_bias=use_bias,
        name=name,
        padding=padding,
        kernel_init=dirac_init(),
    )


class ConvGroup(nn.Module):
    """conv3x3 -> max pool 2 -> BN -> GELU -> conv3x3 -> BN -> GELU."""

    features: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        # BatchNorm without scale (the reference freezes it at 1), PyTorch momentum 0.4, eps 1e-12.
        norm = functools.partial(
            batch_norm, train, self.dtype, eps=1e-12, momentum=0.6, use_scale=False
        )
        x = _conv(self.features, 3, self.dtype, "conv1")(x)
        x = nn.max_pool(x, (2, 2), (2, 2))
        x = nn.gelu(norm(name="norm1")(x), approximate=False)
        x = _conv(self.features, 3, self.dtype, "conv2")(x)
        return nn.gelu(norm(name="norm2")(x), approximate=False)


class Airbench(nn.Module):
    """Whitening conv, GELU, `widths` conv groups, max pool, scaled linear head (Jordan 2024)."""

    widths: tuple[int, ...] = (64, 256, 256)
    whiten_kernel: int = 2
    logit_scale: float = 1 / 9
    num_classes: int = 10
    drop_rate: float = 0.0
    global_pool: bool = True
    in_channels: int = 3
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = model_input(x, self.in_channels, self.dtype)
        width = 2 * self.in_channels * self.whiten_kernel**2
        x = _conv(width, self.whiten_kernel, self.dtype, WHITEN, "VALID", use_bias=True)(x)
        x = nn.gelu(x, approximate=False)
        for i, features in enumerate(self.widths):
            x = ConvGroup(features, self.dtype, name=f"group{i + 1}")(x, train)
            self.sow("intermediates", f"stage{i + 1}", x)
        # Global max pool (the reference's MaxPool2d(3) on its 3x3 map), bias-free linear layer.
        logits = Classifier(
            self.num_classes,
            self.drop_rate,
            self.global_pool,
            self.dtype,
            pool="max",
            use_bias=False,
            kernel_init=torch_default_init,
            name="head",
        )(x, train)
        return (logits * self.logit_scale).astype(jnp.float32)


def image_patches(images: jax.Array, size: int) -> jax.Array:
    """Every `size` x `size` patch (stride 1, no padding) of an NHWC batch, flattened in
    (row, column, channel) order: shape (N * (H - size + 1) * (W - size + 1), size * size * C)."""
    n, h, w, c = images.shape
    rows = [
        images[:, i : h - size + 1 + i, j : w - size + 1 + j]
        for i in range(size)
        for j in range(size)
    ]
    return jnp.stack(rows, axis=3).reshape(-1, size * size * c)


def whitening_kernel(images: jax.Array, size: int = 2, eps: float = 5e-4) -> jax.Array:
    """The (size, size, C, 2 * size * size * C) whitening kernel of normalized NHWC `images`.

    As Jordan 2024: the eigenvectors of the (uncentred) patch covariance, largest eigenvalue
    first, each divided by sqrt(eigenvalue + eps), followed by their negatives (so that the GELU
    after it keeps both signs). Applied without bias to the same patches, the first half of the
    outputs has covariance diag(lambda / (lambda + eps)): near identity.
    """
    patches = image_patches(jnp.asarray(images, jnp.float32), size)
    covariance = patches.T @ patches / patches.shape[0]
    eigenvalues, eigenvectors = jnp.linalg.eigh(covariance)  # Ascending.
    scaled = eigenvectors[:, ::-1] / jnp.sqrt(eigenvalues[::-1] + eps)
    kernel = scaled.reshape(size, size, images.shape[-1], -1)
    return jnp.concatenate([kernel, -kernel], axis=-1)


def init_whitening(params: dict, images: np.ndarray, eps: float = 5e-4) -> dict:
    """`params` with the whitening kernel computed from normalized training `images`."""
    if WHITEN not in params or "kernel" not in params[WHITEN]:
        raise UserError(
            "init_whitening needs a model with a whitening layer (e.g. airbench94); set "
            "--config.init_whitening=False"
        )
    old = params[WHITEN]["kernel"]
    kernel = whitening_kernel(images, old.shape[0], eps)
    if kernel.shape != old.shape:
        raise UserError(f"whitening kernel {kernel.shape} does not fit the model's {old.shape}")
    return {**params, WHITEN: {**params[WHITEN], "kernel": kernel.astype(old.dtype)}}


register(
    "airbench94",
    Airbench,
    input_size=32,
    num_classes=10,
    family="airbench",
)
