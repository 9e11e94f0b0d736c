"""Search spaces on EfficientNet-B0 (cvjax/models/efficientnet.py): MBConv block choices per
stage, and the compound-scaling coefficients.

"mbconv" (MnasNet, Tan et al. 2019, Sec. 4.1: a factorized space, one block type per stage,
from which EfficientNet-B0 was searched; Once-for-All, Cai et al. 2020: kernel 3/5/7, expansion
3/4/6): for each of B0's 7 stages (Table 1), its blocks' kernel (3, 5, 7), expansion (3, 4, 6),
squeeze-excitation on or off (MnasNet's SE ratio 0 or 0.25), and the number of blocks: B0's
repeats - 1, + 0 or + 1 (at least 1), MnasNet's layer count searched around its baseline's.
Strides, widths, SiLU, the stem and the head stay B0's. An architecture is one `k<kernel>e<
expansion>se<0|1>d<depth>` group per stage, joined by "-"; B0 itself (expansion 1 in stage 1) is
`B0_ARCH`, which belongs to the space built with `expansions=(1, 3, 4, 6)`. Decisions, per stage:
kernel, expansion, SE, depth (2 options in the 1-block stages 1 and 7, else 3); 3^7 * 3^7 * 2^7 *
(2^2 * 3^5) = 6.0e11 architectures, all valid.

"compound" (Tan & Le 2019, Sec. 3.3, step 1): the depth, width and resolution bases alpha, beta,
gamma, each on a 0.05 grid (alpha 1.0-2.0, beta and gamma 1.0-1.5), valid when alpha * beta^2 *
gamma^2 is within `tolerance` of 2 (FLOPs double per unit of phi); with the default 0.1, 109 of
the 2,541 triples are valid and none has beta or gamma above 1.40. The paper grid-searched them
at phi = 1 on B0 and found alpha=1.2, beta=1.1, gamma=1.15 (product 1.92): `PAPER_ARCH`. An
architecture is "alpha=1.20,beta=1.10,gamma=1.15"; its model is B0 ("efficientnet") with
depth_mult = alpha * base_depth and width_mult = beta * base_width, trained at base_resolution *
gamma rounded to a multiple of `resolution_multiple` (as `efficientnet.compound_scaling`). For
a CIFAR proxy (defaults): base_resolution 32 with the CIFAR stem, multiple 4 (gamma 1.15 gives
36 px; a multiple of 8 would leave only 32, 40 and 48); ImageNet: base_resolution=224,
resolution_multiple=8, cifar_stem=False.

Both spaces build "efficientnet" with BatchNorm momentum 0.9 (`bn_momentum`; PyTorch's default,
torchvision's B0): with the paper's 0.99 the running statistics of a proxy trained for a few
hundred steps would still be far from the data's. `cost` measures params and GMACs at the
space's data shape and `num_classes` once per architecture.
"""

import re
from collections.abc import Sequence

import numpy as np

from cvjax.errors import UserError
from cvjax.models.efficientnet import B0_STAGES
from cvjax.nas.spaces import SearchSpace, register_space

KERNELS = (3, 5, 7)
EXPANSIONS = (3, 4, 6)
DEPTH_OFFSETS = (-1, 0, 1)
B0_ARCH = "k3e1se1d1-k3e6se1d2-k5e6se1d2-k3e6se1d3-k5e6se1d3-k5e6se1d4-k3e6se1d1"
_BLOCK = re.compile(r"k(\d+)e(\d+)se([01])d(\d+)")
_FORMAT = (
    "k<kernel>e<expansion>se<0|1>d<depth> for each of the 7 stages, joined by '-', e.g. "
    "k3e6se1d1-k3e6se1d2-k5e6se1d2-k3e6se1d3-k5e6se1d3-k5e6se1d4-k3e6se1d1"
)

Block = tuple[int, int, bool, int]  # kernel, expansion, squeeze-excitation, depth


class MBConvSpace(SearchSpace):
    """Kernel, expansion, SE and depth of each EfficientNet-B0 stage (module docstring)."""

    name = "mbconv"

    def __init__(
        self,
        width_mult: float = 1.0,
        cifar_stem: bool = True,
        image_size: int = 32,
        num_classes: int = 10,
        bn_momentum: float = 0.9,
        kernels: Sequence[int] = KERNELS,
        expansions: Sequence[int] = EXPANSIONS,
    ):
        self.kernels, self.expansions = tuple(kernels), tuple(expansions)
        if not self.kernels or any(k < 1 or k % 2 == 0 for k in self.kernels):
            raise UserError(f"mbconv space: kernels {list(kernels)} must be odd sizes, e.g. 3, 5")
        if not self.expansions or any(e < 1 for e in self.expansions):
            raise UserError(f"mbconv space: expansions {list(expansions)} must be >= 1")
        self.depths = tuple(
            tuple(sorted({max(1, n + o) for o in DEPTH_OFFSETS})) for *_, n in B0_STAGES
        )
        self.width_mult, self.cifar_stem, self.bn_momentum = width_mult, cifar_stem, bn_momentum
        self.image_size, self.num_classes = image_size, num_classes

    def cardinalities(self) -> tuple[int, ...]:
        return tuple(
            n
            for depths in self.depths
            for n in (len(self.kernels), len(self.expansions), 2, len(depths))
        )

    def from_choices(self, choices: Sequence[int]) -> str:
        sizes = self.cardinalities()
        if len(choices) != len(sizes) or not all(
            0 <= c < n for c, n in zip(choices, sizes, strict=True)
        ):
            raise UserError(
                f"mbconv choices {list(choices)} must be {len(sizes)} indices below {list(sizes)}"
            )
        blocks = []
        for stage, depths in enumerate(self.depths):
            k, e, se, d = choices[4 * stage : 4 * stage + 4]
            blocks.append((self.kernels[k], self.expansions[e], bool(se), depths[d]))
        return encode(blocks)

    def to_choices(self, arch: str) -> tuple[int, ...]:
        choices = []
        for stage, (k, e, se, d) in enumerate(decode(arch)):
            options = (self.kernels, self.expansions, (False, True), self.depths[stage])
            for what, value, allowed in zip(
                ("kernel", "expansion", "se", "depth"), (k, e, se, d), options, strict=True
            ):
                if value not in allowed:
                    raise UserError(
                        f"mbconv arch {arch!r}: stage {stage + 1} {what} {int(value)} is not one "
                        f"of {[int(a) for a in allowed]}"
                    )
                choices.append(allowed.index(value))
        return tuple(choices)

    def model(self, arch: str) -> tuple[str, dict]:
        blocks = decode(arch)
        stages = tuple(
            (e, k, s, c_in, c_out, d)
            for (k, e, _, d), (_, _, s, c_in, c_out, _) in zip(blocks, B0_STAGES, strict=True)
        )
        return "efficientnet", {
            "stages": stages,
            "stage_se": tuple(se for _, _, se, _ in blocks),
            "width_mult": self.width_mult,
            "cifar_stem": self.cifar_stem,
            "bn_momentum": self.bn_momentum,
        }


def decode(arch: str) -> tuple[Block, ...]:
    """(kernel, expansion, se, depth) per stage of an mbconv string; UserError on a bad one."""
    groups = arch.strip().split("-")
    if len(groups) != len(B0_STAGES):
        raise UserError(
            f"mbconv arch {arch!r} has {len(groups)} stages, not {len(B0_STAGES)}: {_FORMAT}"
        )
    blocks = []
    for group in groups:
        match = _BLOCK.fullmatch(group)
        if not match:
            raise UserError(f"mbconv arch {arch!r}: cannot read {group!r}; write {_FORMAT}")
        k, e, se, d = (int(v) for v in match.groups())
        blocks.append((k, e, bool(se), d))
    return tuple(blocks)


def encode(blocks: Sequence[Block]) -> str:
    """The mbconv string of (kernel, expansion, se, depth) per stage."""
    return "-".join(f"k{k}e{e}se{int(se)}d{d}" for k, e, se, d in blocks)


def _grid(low: float, high: float, step: float = 0.05) -> tuple[float, ...]:
    return tuple(round(low + i * step, 2) for i in range(round((high - low) / step) + 1))


ALPHAS, BETAS, GAMMAS = _grid(1.0, 2.0), _grid(1.0, 1.5), _grid(1.0, 1.5)
GRIDS = (ALPHAS, BETAS, GAMMAS)
PAPER_ARCH = "alpha=1.20,beta=1.10,gamma=1.15"
_KEYS = ("alpha", "beta", "gamma")


class CompoundSpace(SearchSpace):
    """alpha, beta, gamma with alpha * beta^2 * gamma^2 within `tolerance` of `target` (module
    docstring); a model is B0 at phi = 1 on top of the base proxy."""

    name = "compound"

    def __init__(
        self,
        tolerance: float = 0.1,
        target: float = 2.0,
        base_width: float = 1.0,
        base_depth: float = 1.0,
        base_resolution: int = 32,
        resolution_multiple: int = 4,
        cifar_stem: bool = True,
        num_classes: int = 10,
        bn_momentum: float = 0.9,
    ):
        if tolerance < 0 or base_width <= 0 or base_depth <= 0 or resolution_multiple < 1:
            raise UserError(
                "compound space: tolerance >= 0, base_width > 0, base_depth > 0 and "
                "resolution_multiple >= 1 are needed"
            )
        self.tolerance, self.target = tolerance, target
        self.base_width, self.base_depth = base_width, base_depth
        self.base_resolution, self.resolution_multiple = base_resolution, resolution_multiple
        self.cifar_stem, self.num_classes, self.bn_momentum = cifar_stem, num_classes, bn_momentum
        self.image_size = base_resolution

    def cardinalities(self) -> tuple[int, ...]:
        return (len(ALPHAS), len(BETAS), len(GAMMAS))

    def from_choices(self, choices: Sequence[int]) -> str:
        sizes = self.cardinalities()
        if len(choices) != 3 or not all(0 <= c < n for c, n in zip(choices, sizes, strict=True)):
            raise UserError(f"compound choices {list(choices)} must be 3 indices below {sizes}")
        values = (grid[c] for grid, c in zip(GRIDS, choices, strict=True))
        return ",".join(f"{key}={value:.2f}" for key, value in zip(_KEYS, values, strict=True))

    def to_choices(self, arch: str) -> tuple[int, ...]:
        return tuple(
            int(np.argmin(np.abs(np.asarray(grid) - value)))
            for grid, value in zip(GRIDS, coefficients(arch), strict=True)
        )

    def is_valid(self, arch: str) -> bool:
        alpha, beta, gamma = coefficients(arch)
        return abs(alpha * beta**2 * gamma**2 - self.target) <= self.tolerance + 1e-9

    def model(self, arch: str) -> tuple[str, dict]:
        alpha, beta, _ = coefficients(arch)
        return "efficientnet", {
            "depth_mult": round(alpha * self.base_depth, 6),
            "width_mult": round(beta * self.base_width, 6),
            "cifar_stem": self.cifar_stem,
            "bn_momentum": self.bn_momentum,
        }

    def resolution(self, arch: str) -> int:
        """base_resolution * gamma, to the nearest multiple of `resolution_multiple`."""
        m = self.resolution_multiple
        return max(m, int(round(self.base_resolution * coefficients(arch)[2] / m)) * m)


def coefficients(arch: str) -> tuple[float, float, float]:
    """(alpha, beta, gamma) of "alpha=A,beta=B,gamma=G", each on its grid; UserError otherwise."""
    example = f"write it as {PAPER_ARCH!r} with values on the 0.05 grid"
    values = {}
    for item in arch.strip().split(","):
        key, _, value = item.partition("=")
        try:
            values[key.strip()] = float(value)
        except ValueError:
            raise UserError(f"compound arch {arch!r}: cannot read {item!r}; {example}") from None
    if sorted(values) != sorted(_KEYS):
        raise UserError(f"compound arch {arch!r} needs exactly alpha, beta, gamma; {example}")
    for key, grid in zip(_KEYS, GRIDS, strict=True):
        if not any(abs(values[key] - g) < 1e-6 for g in grid):
            raise UserError(
                f"compound arch {arch!r}: {key}={values[key]} is not in {grid[0]:.2f}.."
                f"{grid[-1]:.2f} step 0.05; {example}"
            )
    return values["alpha"], values["beta"], values["gamma"]


register_space("mbconv", MBConvSpace)
register_space("compound", CompoundSpace)
