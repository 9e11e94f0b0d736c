"""Checks the converters of `cvjax/weights/mobile.py` against the real torchvision / timm models.

    pip install torch torchvision timm safetensors   # optional, for this check only
    python experiments/check_weights_mobile.py [--models 'efficientnet*'] [--source timm]

For each (cvjax model, reference) in `mobile.REFERENCES`: build the torch model with random
weights (nothing downloaded), randomize its BatchNorm affine parameters and running statistics,
save the state dict as safetensors, read it back with `cvjax.weights.load_state_dict`, convert it
with `from_torch`, and compare the eval-mode logits on the same random batch of 2 (64x64 inputs,
75x75 for the Inception models' unpadded stems). Also runs the references that do not convert
(timm's TF-"SAME"-padded `tf_efficientnet_b0`), loaded into the nearest cvjax model, at an even
and an odd input size, to show where they part. Writes <out>/weights_check_mobile.md and .json:
per model the parameter counts and the relative error max|cvjax - torch| / max|torch|
(pass: < 1e-3).
"""

import argparse
import fnmatch
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from experiments.check_weights_torchvision import (  # noqa: E402
    randomize_batch_norm,
    relative_error,
)

TOLERANCE = 1e-3
INPUT_SIZE = {"inception_v4": 75, "inception_resnet_v2": 75}
DEFAULT_SIZE = 64
# References that do not convert: (cvjax model, source, reference, kwargs, input sizes).
NOT_CONVERTIBLE = [("efficientnet_b0", "timm", "tf_efficientnet_b0", {"bn_eps": 1e-3}, (64, 65))]
# timm's NASNet with its TF-"SAME" average pools leaving the padding out, as cvjax's (see NOTES).
DIAGNOSES = [("nasnet_a_large", "timm", "nasnetalarge-pool-fix", {}, (DEFAULT_SIZE,))]
# References of widths that cvjax does not register, loaded through a registered name's kwargs.
OTHER_WIDTHS = [
    ("mnasnet1_0", "torchvision", "mnasnet0_75", {"alpha": 0.75}, (DEFAULT_SIZE,)),
    ("mnasnet1_0", "torchvision", "mnasnet1_3", {"alpha": 1.3}, (DEFAULT_SIZE,)),
    ("mobilenet_v1_050_224", "timm", "mobilenetv1_050", {}, (DEFAULT_SIZE,)),
]

NOTES = [
    "Notes on the mismatches:",
    "",
    "- nasnetalarge: timm's stride-2 average pools (`AvgPool2dSame`) zero-pad the input before",
    "  pooling, so the padding counts in the border averages despite `count_include_pad=False`;",
    "  cvjax leaves it out, as TF-slim (where the weights were trained) does. No cvjax kwarg",
    "  changes this. The row `nasnetalarge-pool-fix` is timm's model with those pools leaving the",
    "  padding out of the count (patched here): it matches.",
    "- tf_efficientnet_b0 (no converter): TF-'SAME' padding pads a stride-2 convolution of an",
    "  even input at the bottom/right only, cvjax's EfficientNet symmetrically (torchvision);",
    "  they agree when every stride-2 layer sees an odd size (65 -> 33 -> 17 -> 9 -> 5 -> 3).",
    "- A rel err far above 1e-6 that passes comes with a torch f32 err of the same size: random",
    "  weights make a deep reference's activations large, and float32 rounding alone moves its",
    "  logits that much.",
]


def torch_model(source: str, name: str):
    if source == "torchvision":
        import torchvision

        return torchvision.models.get_model(name, weights=None)
    import timm

    if name == "nasnetalarge-pool-fix":
        return _exclude_padding_from_averages(timm.create_model("nasnetalarge"))
    if name == "mobilenetv1_050":  # timm builds MobileNet-v1 at any width but registers few.
        from timm.models.efficientnet import _gen_mobilenet_v1

        return _gen_mobilenet_v1(name, 0.5)
    return timm.create_model(name, pretrained=False)


def _exclude_padding_from_averages(model):
    """timm's `AvgPool2dSame` modules, changed to divide by the unpadded pixels (TF-slim's)."""
    import types

    import torch.nn.functional as F
    from timm.layers.padding import pad_same
    from timm.layers.pool2d_same import AvgPool2dSame

    def forward(self, x):
        def pool(y):
            return F.avg_pool2d(
                pad_same(y, self.kernel_size, self.stride), self.kernel_size, self.stride
            )

        return pool(x) / pool(x.new_ones((1, 1, *x.shape[2:])))

    for module in model.modules():
        if isinstance(module, AvgPool2dSame):
            module.forward = types.MethodType(forward, module)
    return model


def check(name: str, source: str, reference_name: str, tmp: str, sizes, **kwargs) -> list[dict]:
    import jax
    import torch
    from safetensors.torch import save_file

    from cvjax import models, weights

    torch.manual_seed(0)
    reference = torch_model(source, reference_name).eval()
    randomize_batch_norm(reference, seed=1)
    path = os.path.join(tmp, f"{reference_name}.safetensors")
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, path)
    state_dict = weights.load_state_dict(path)
    start = time.perf_counter()
    variables = weights.from_torch(name, state_dict, source=source, **kwargs)
    convert_s = time.perf_counter() - start
    model = models.create(name, **weights.resolve_kwargs(name, state_dict, source, **kwargs))
    forward = jax.jit(lambda v, x: model.apply(v, x, train=False))
    rows = []
    for size in sizes:
        images = np.random.default_rng(0).normal(size=(2, size, size, 3)).astype(np.float32)
        batch = torch.from_numpy(images.transpose(0, 3, 1, 2))
        with torch.no_grad():
            expected = reference(batch).numpy()
            exact = reference.double()(batch.double()).numpy()
            reference.float()
        got = np.asarray(forward(variables, images))
        error = relative_error(got, expected)
        # The reference's own float32 rounding: deep models with random weights amplify it.
        noise = relative_error(expected, exact)
        rows.append(
            {
                "model": name,
                "source": source,
                "reference": reference_name,
                "torch_params": sum(p.numel() for p in reference.parameters()),
                "cvjax_params": sum(
                    int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"])
                ),
                "input": size,
                "rel_err": error,
                "torch_f32_vs_f64": noise,
                "pass": error < TOLERANCE,
                "convert_s": round(convert_s, 2),
            }
        )
    return rows


def write(rows: list[dict], out: str) -> None:
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "weights_check_mobile.json"), "w") as f:
        json.dump(rows, f, indent=1)
    import torch

    lines = [
        "# PyTorch weight import of the efficient families: cvjax logits vs torchvision / timm",
        "",
        "Command: `python experiments/check_weights_mobile.py` (random weights and BatchNorm",
        f"statistics, eval mode, batch 2); {platform.machine()} CPU, torch {torch.__version__},",
        f"{time.strftime('%Y-%m-%d')}. rel err = max|cvjax - torch| / max|torch|, pass <",
        f"{TOLERANCE:g}; torch f32 err = the same for torch float32 vs float64 (the reference's",
        "own rounding). Rows marked * are references with no converter, loaded into the nearest",
        "cvjax model to show the difference.",
        "",
        "| cvjax model | source | reference | params (torch) | params (cvjax) | input | rel err "
        "| torch f32 err | pass |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        ref = r["reference"] + (" *" if r.get("expected_fail") else "")
        if "error" in r:
            lines.append(f"| {r['model']} | {r['source']} | {ref} | | | | {r['error']} | | no |")
            continue
        lines.append(
            f"| {r['model']} | {r['source']} | {ref} | {r['torch_params']:,} | "
            f"{r['cvjax_params']:,} | {r['input']} | {r['rel_err']:.1e} | "
            f"{r['torch_f32_vs_f64']:.1e} | "
            f"{'yes' if r['pass'] else 'NO'} |"
        )
    lines += ["", *NOTES]
    with open(os.path.join(out, "weights_check_mobile.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def _row_key(row: dict) -> tuple:
    return row["model"], row["source"], row["reference"], row.get("input")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", default="torchvision,timm", help="Comma-separated sources.")
    parser.add_argument("--models", default="*", help="fnmatch pattern(s), comma-separated.")
    parser.add_argument("--out", default=os.path.join(REPO, "experiments", "results"))
    args = parser.parse_args()

    from cvjax.weights.mobile import REFERENCES

    out_json = os.path.join(args.out, "weights_check_mobile.json")
    rows = []
    if os.path.exists(out_json):  # Keep the other models' rows when re-checking a few.
        with open(out_json) as f:
            rows = json.load(f)
    patterns, sources = args.models.split(","), args.source.split(",")
    jobs = [
        (name, source, reference, {}, (INPUT_SIZE.get(name, DEFAULT_SIZE),), False)
        for name, refs in REFERENCES.items()
        for source, reference in refs
    ]
    jobs += [(*job, False) for job in OTHER_WIDTHS + DIAGNOSES]
    jobs += [(*job, True) for job in NOT_CONVERTIBLE]
    with tempfile.TemporaryDirectory() as tmp:
        for name, source, reference, kwargs, sizes, expected_fail in jobs:
            if source not in sources or not any(fnmatch.fnmatch(name, p) for p in patterns):
                continue
            try:
                new = check(name, source, reference, tmp, sizes, **kwargs)
            except Exception as e:  # One broken model must not hide the others' results.
                new = [{"model": name, "source": source, "reference": reference}]
                new[0]["error"] = f"{type(e).__name__}: {e}"
            for row in new:
                row["expected_fail"] = expected_fail
                same = (name, source, reference, row.get("input"))
                rows = [r for r in rows if _row_key(r) != same]
                rows.append(row)
                print(json.dumps(row), flush=True)
            write(sorted(rows, key=lambda r: (r["model"], r["source"], r["reference"])), args.out)


if __name__ == "__main__":
    main()
