"""Prints the model table: `python -m cvjax.models [PATTERN] [--json] [--update README.md]`.

Parameter counts come from `jax.eval_shape` and GMACs from XLA's cost analysis of the lowered
(never compiled) forward pass at batch 1 and the default resolution: flops / 2.
"""

import argparse
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

from cvjax import models
from cvjax.errors import UserError
from cvjax.models import fastconv


def abstract_variables(name: str, image_size: int = 0, **kwargs):
    """Shapes of `name`'s variables at `image_size` (0: its default), without allocating them."""
    size = image_size or models.model_info(name)["input_size"]
    model = models.create(name, **kwargs)
    shape = (1, size, size, model.in_channels)
    with fastconv.xla_only():  # The same shapes; lax's convolutions trace much faster.
        variables = jax.eval_shape(
            lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(shape), train=False)
        )
    return model, variables, shape


def count_params(name: str, image_size: int = 0, **kwargs) -> int:
    _, variables, _ = abstract_variables(name, image_size, **kwargs)
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"]))


def gmacs(name: str, image_size: int = 0, **kwargs) -> float:
    """Multiply-accumulates of one forward pass at `image_size` (0: the default), in billions."""
    model, variables, shape = abstract_variables(name, image_size, **kwargs)
    with fastconv.xla_only():  # Count convolutions as convolutions, however CPU computes them.
        lowered = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(
            variables, jax.ShapeDtypeStruct(shape, jnp.float32)
        )
    cost = lowered.cost_analysis()
    if isinstance(cost, list):
        cost = cost[0]
    return float(cost["flops"]) / 2 / 1e9


def table(pattern: str = "*") -> list[dict]:
    names = models.list_models(pattern)
    if not names:
        raise UserError(f"no model matches {pattern!r}; try 'python -m cvjax.models' for all")
    return [
        {
            "name": n,
            "input_size": models.model_info(n)["input_size"],
            "params": count_params(n),
            "gmacs": round(gmacs(n), 3),
        }
        for n in names
    ]


BEGIN, END = "<!-- models:begin -->", "<!-- models:end -->"


def markdown(rows: list[dict]) -> str:
    lines = ["| model | family | input | params | GMACs |", "|---|---|---:|---:|---:|"]
    for r in rows:
        family = models.model_info(r["name"])["family"]
        lines.append(
            f"| {r['name']} | {family} | {r['input_size']} | {r['params']:,} | {r['gmacs']:.3f} |"
        )
    return "\n".join(lines)


def update_readme(path: str, text: str) -> None:
    """Replaces what stands between the models:begin and models:end markers in `path`."""
    with open(path) as f:
        content = f.read()
    if BEGIN not in content or END not in content:
        raise UserError(f"{path} has no {BEGIN} ... {END} block; add one where the table goes")
    head, rest = content.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    with open(path, "w") as f:
        f.write(f"{head}{BEGIN}\n{text}\n{END}{tail}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cvjax.models", description=__doc__)
    parser.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'resnet*'")
    parser.add_argument("--json", action="store_true", help="print a JSON list")
    parser.add_argument("--update", metavar="README", help="write the table into this file")
    args = parser.parse_args(argv)
    try:
        rows = table(args.pattern)
        if args.json:
            print(json.dumps(rows))
        elif args.update:
            update_readme(args.update, markdown(rows))
        else:
            print(markdown(rows))
    except UserError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
