"""Converts a torchvision / timm state dict into a cvjax checkpoint directory.

    python -m cvjax.convert --model resnet50 --source torchvision \\
        --input resnet50.safetensors --output /tmp/resnet50_tv
    python -m cvjax.main --config=... --config.init_from=/tmp/resnet50_tv

The input is a .safetensors or .npz state dict (pickled .pt files are refused; the error gives
the one-line command that re-saves one). The output directory holds `variables/` (Orbax) and
`meta.json`; see `cvjax.weights.io`. `--kwarg name=value` (repeatable) passes model kwargs, e.g.
`--kwarg num_classes=10` for a fine-tuned head; `--list` prints the convertible models.
"""

import argparse
import ast
import sys

from cvjax.errors import UserError


def _parse_kwargs(pairs: list[str]) -> dict:
    """["num_classes=10", "drop_rate=0.2"] -> {"num_classes": 10, "drop_rate": 0.2}."""
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UserError(
                f"--kwarg {pair!r} is not name=value; write e.g. --kwarg num_classes=10"
            )
        try:
            out[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[name] = value  # A bare word is a string.
    return out


def convert(
    model: str, source: str, input_path: str, output: str, model_kwargs: dict | None = None
) -> dict:
    """Reads `input_path`, converts it for `model` and writes `output`; returns the meta record."""
    import jax
    import numpy as np

    from cvjax import weights

    state_dict = weights.load_state_dict(input_path)
    kwargs = weights.resolve_kwargs(model, state_dict, source, **(model_kwargs or {}))
    variables = weights.from_torch(model, state_dict, source, **kwargs)
    meta = {"source": source, "model_kwargs": kwargs, "input": input_path}
    weights.save_converted(output, model, variables, meta)
    params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"]))
    return {**meta, "model": model, "params": params}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cvjax.convert", description=__doc__)
    parser.add_argument("--model", help="cvjax model name, e.g. resnet50")
    parser.add_argument("--source", default="torchvision", help="torchvision or timm")
    parser.add_argument("--input", help="state dict: .safetensors or .npz")
    parser.add_argument("--output", help="new checkpoint directory")
    parser.add_argument("--kwarg", action="append", default=[], help="model kwarg name=value")
    parser.add_argument("--list", action="store_true", help="print the convertible models")
    args = parser.parse_args(argv)
    try:
        from cvjax import weights

        if args.list:
            print(" ".join(weights.list_convertible(args.source)))
            return
        missing = [f"--{f}" for f in ("model", "input", "output") if not getattr(args, f)]
        if missing:
            raise UserError(f"give {', '.join(missing)}; see python -m cvjax.convert --help")
        record = convert(
            args.model, args.source, args.input, args.output, _parse_kwargs(args.kwarg)
        )
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(
        f"wrote {args.output}: {record['model']} from {args.source}, {record['params']:,} params; "
        f"train from it with --config.init_from={args.output}"
    )


if __name__ == "__main__":
    main()
