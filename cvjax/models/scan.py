"""Identical blocks as one `nn.scan` loop (`scan_blocks=True`), and the variable layouts.

XLA compiles a scanned stage once instead of once per block. On this project's CPU machine that
cut the compile time of a ResNet-152 train step by 2.4x. It made ResNet-50's slower, and the
steps themselves run slower too. BENCHMARKS.md, "Scan over identical blocks", has the figures.
It is therefore an option, not the default.

A run of `count` identical blocks `Name_{first}` ... `Name_{first + count - 1}` becomes one
module named `scan__Name__{first}__{count}`. Its variables hold the blocks' variables stacked on
a leading axis, under `block/`. The name keeps the block indices, so `unstack` and `stack_like`
convert between the two layouts without knowing the model. Pretrained weights, converted
PyTorch weights and checkpoints of either layout therefore load into either model
(`train.transfer.merge_pretrained`).
"""

import re
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from flax import traverse_util

_SCANNED = re.compile(r"^scan__(?P<name>\w+?)__(?P<first>\d+)__(?P<count>\d+)$")


def scan_name(block_name: str, first: int, count: int) -> str:
    return f"scan__{block_name}__{first}__{count}"


class _Step(nn.Module):
    """One scan iteration: the block applied to the carry."""

    block: type
    kwargs: dict
    train: bool

    @nn.compact
    def __call__(self, x, _):
        return self.block(**self.kwargs, name="block")(x, self.train), None


def repeat(block: type, kwargs: dict, count: int, first: int, train: bool, x: jax.Array):
    """`count` blocks `block(**kwargs)` applied in sequence, as one scanned module."""
    scanned = nn.scan(
        _Step,
        variable_axes={True: 0},  # every collection (params, batch_stats) stacked per block
        split_rngs={"params": True, "dropout": True},
        length=count,
    )
    name = scan_name(block.__name__, first, count)
    return scanned(block, kwargs, train, name=name)(x, None)[0]


def _flat(tree: Any) -> dict:
    return traverse_util.flatten_dict(dict(tree), sep="/") if tree else {}


def unstack(tree: Any) -> dict:
    """`tree` (one collection, nested dicts) with every scanned group split into its blocks."""
    out = {}
    for path, value in _flat(tree).items():
        head, _, rest = path.partition("/")
        match = _SCANNED.match(head)
        if match is None or not rest.startswith("block/"):
            out[path] = value
            continue
        first, count, stacked = int(match["first"]), int(match["count"]), np.asarray(value)
        for k in range(count):
            out[f"{match['name']}_{first + k}/{rest[len('block/') :]}"] = stacked[k]
    return traverse_util.unflatten_dict(out, sep="/") if out else {}


def stack_like(tree: Any, target: Any) -> dict:
    """`tree` (one collection, unscanned) in `target`'s layout: blocks stacked where it scans.

    Leaves `stack_like` cannot place (a missing block) are left out; callers compare the result
    with the target and report what is missing.
    """
    source = _flat(unstack(tree))
    out, used = {}, set()
    for path in _flat(target):
        head, _, rest = path.partition("/")
        match = _SCANNED.match(head)
        if match is None or not rest.startswith("block/"):
            if path in source:
                out[path] = source[path]
                used.add(path)
            continue
        first, count = int(match["first"]), int(match["count"])
        parts = [f"{match['name']}_{first + k}/{rest[len('block/') :]}" for k in range(count)]
        if all(p in source for p in parts):
            out[path] = np.stack([np.asarray(source[p]) for p in parts])
            used.update(parts)
    out.update({p: v for p, v in source.items() if p not in used})  # extras, for error reports
    return traverse_util.unflatten_dict(out, sep="/") if out else {}


def is_scanned(tree: Any) -> bool:
    return any(_SCANNED.match(path.partition("/")[0]) for path in _flat(tree))
