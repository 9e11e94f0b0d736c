"""Reading torch state dicts without unpickling, and the converted-checkpoint directory.

Inputs are safetensors files (read here; the format is an 8-byte little-endian header length, a
JSON header giving each tensor's dtype, shape and byte range, then the raw little-endian bytes)
or .npz archives (`np.load(allow_pickle=False)`). Pickled .pt/.pth/.bin files are refused: loading
them can run arbitrary code.

A converted checkpoint is a directory: `variables/`, an Orbax StandardCheckpointer tree
{"params", "batch_stats"}, and `meta.json` {"model", "source", "model_kwargs", "num_classes",
"format_version"}; `--config.init_from=DIR` of the training engine reads it via `load_converted`.
"""

import json
import os
from collections.abc import Mapping
from typing import Any

import ml_dtypes
import numpy as np

from cvjax.errors import UserError

FORMAT_VERSION = 1
PICKLED_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".tar")
_MAX_HEADER = 100 * 2**20  # The reference implementation's limit.
_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
    "BF16": np.dtype("<u2"),  # Widened to float32 below: numpy has no bfloat16.
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
}


def _bad_file(path: str, why: str) -> UserError:
    return UserError(f"{path} is not a valid safetensors file ({why}); re-save the weights")


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """The tensors of a safetensors file as numpy arrays (BF16 widened to float32, exactly)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise _bad_file(path, "shorter than its 8-byte header length")
        header_len = int.from_bytes(prefix, "little")
        if header_len > min(_MAX_HEADER, size - 8):
            raise _bad_file(path, f"header length {header_len} exceeds the file")
        try:
            header = json.loads(f.read(header_len).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise _bad_file(path, f"header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise _bad_file(path, "header is not a JSON object")
    data = np.memmap(path, np.uint8, "r", offset=8 + header_len) if size > 8 + header_len else None
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype_name, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise _bad_file(path, f"entry {name!r} lacks dtype/shape/data_offsets") from None
        if dtype_name not in _DTYPES:
            raise _bad_file(path, f"tensor {name!r} has unsupported dtype {dtype_name}")
        dtype = _DTYPES[dtype_name]
        count = int(np.prod(shape, dtype=np.int64))
        if end - begin != count * dtype.itemsize or begin < 0 or end > size - 8 - header_len:
            raise _bad_file(path, f"tensor {name!r} has byte range {begin}:{end} for {shape}")
        raw = data[begin:end] if count else np.zeros(0, np.uint8)
        array = np.frombuffer(raw.tobytes(), dtype).reshape(shape)
        if dtype_name == "BF16":
            # bfloat16 is the upper half of a float32.
            array = (array.astype(np.uint32) << 16).view(np.float32)
        else:
            array = array.astype(dtype.newbyteorder("="), copy=False)
        out[name] = array
    return out


def load_state_dict(path: str) -> dict[str, np.ndarray]:
    """A torch state dict (names -> numpy arrays) from a .safetensors or .npz file."""
    if not os.path.isfile(path):
        raise UserError(f"weights file {path} does not exist; pass the path of a saved state dict")
    lower = path.lower()
    if lower.endswith(PICKLED_SUFFIXES):
        raise UserError(
            f"{path} is a pickled torch file, which cvjax does not load (unpickling can run code); "
            'convert it: python -c "import torch, safetensors.torch as st; '
            f"st.save_file(torch.load('{path}', map_location='cpu', weights_only=True), "
            f"'{os.path.splitext(path)[0]}.safetensors')\""
        )
    if lower.endswith(".safetensors"):
        return read_safetensors(path)
    if lower.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as archive:
                return {k: archive[k] for k in archive.files}
        except ValueError as e:
            raise UserError(f"{path} holds objects, not plain arrays ({e}); re-save it") from None
    raise UserError(f"cannot read weights from {path}; give a .safetensors or .npz file")


def save_converted(
    directory: str, model_name: str, variables: Mapping[str, Any], meta: Mapping[str, Any]
) -> None:
    """Writes `variables` ({"params", "batch_stats"}) and meta.json to a new `directory`.

    `meta` gives "source" and "model_kwargs" (the kwargs the variables were converted for);
    "model", "num_classes" and "format_version" are filled in here.
    """
    import orbax.checkpoint as ocp

    directory = os.path.abspath(directory)
    if os.path.exists(os.path.join(directory, "variables")):
        raise UserError(f"{directory} already holds converted weights; choose a new --output")
    os.makedirs(directory, exist_ok=True)
    model_kwargs = dict(meta.get("model_kwargs", {}))
    kernel = variables["params"]["head"]["fc"]["kernel"] if "head" in variables["params"] else None
    num_classes = model_kwargs.get("num_classes", None if kernel is None else kernel.shape[-1])
    record = {
        **meta,
        "model": model_name,
        "model_kwargs": model_kwargs,
        "num_classes": num_classes,
        "format_version": FORMAT_VERSION,
    }
    tree = {c: variables[c] for c in ("params", "batch_stats") if c in variables}
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(os.path.join(directory, "variables"), tree)
    with open(os.path.join(directory, "meta.json"), "w") as f:
        json.dump(record, f, indent=2, sort_keys=True)


def load_converted(directory: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(meta, variables) of a directory written by `save_converted` / `python -m cvjax.convert`."""
    import orbax.checkpoint as ocp

    directory = os.path.abspath(directory)
    meta_path = os.path.join(directory, "meta.json")
    if not os.path.isfile(meta_path):
        raise UserError(
            f"{directory} has no meta.json; create it with python -m cvjax.convert --output DIR"
        )
    with open(meta_path) as f:
        meta = json.load(f)
    if meta.get("format_version") != FORMAT_VERSION:
        raise UserError(
            f"{directory} has format_version {meta.get('format_version')}, this cvjax reads "
            f"{FORMAT_VERSION}; convert the weights again with python -m cvjax.convert"
        )
    with ocp.StandardCheckpointer() as checkpointer:
        variables = checkpointer.restore(os.path.join(directory, "variables"))
    return meta, dict(variables)
