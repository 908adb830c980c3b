"""`intlm export`: a checkpoint as one flat model file for the dependency-free C runtime (runtime.c).

The C program reads the file, checks its header and hash, and samples exactly the bytes that
``intlm sample --raw`` writes. The file, all little-endian:

    offset  size
    0       8     MAGIC
    8       4     u32 format version (VERSION)
    12      4     u32 header size: where the first tensor's bytes may start
    16      32    SHA-256 of the whole file except these 32 bytes
    48      4*6   u32 width, layers, mlp_ratio, context_bits, context_order, context_logits (without
                  context tables: 0, 0, 0)
    72      4     u32 tensor count
    76      8     u64 training step of the checkpoint
    84      64    the checkpoint's content hash (hex), where the weights came from
    148     32    the first CHECK_BYTES bytes ``intlm sample --raw`` writes for an empty prompt, seed 0,
                  temperature 1, top-k 0 (``intlm-run MODEL --check`` recomputes them on the target)
    180     56*n  tensor directory, one entry per tensor: name (16 bytes, NUL-padded), u32 element
                  size (1: int8, 4: int32), u32 dimension count, u32 dims[4] (1 past the count),
                  u64 offset, u64 byte count
    ...           tensor bytes, each tensor at a multiple of ALIGN, C order, zeros between

The tensors are the model's parameters read by their checkpoint names (DENSE, then CONTEXT with
context tables), then the sampler's weight table ``exp2_neg`` (arith.EXP2_NEG, int32), so the C
program needs no table of its own; it checks every shape against the config. A config field that
changes what the model computes and that the runtime does not know (not in RUNTIME_FIELDS or
TRAINING_FIELDS) is refused unless it has its default, "off", value.
"""

import dataclasses
import hashlib
import struct
from importlib import resources
from pathlib import Path

import numpy as np

from . import context
from .arith import EXP2_NEG
from .atomic import atomic_file
from .errors import IntlmError
from .run import _load as load_checkpoint_run  # (Run, checkpoint.Checkpoint): the hash as stored
from .sample import generate

# the config fields the runtime reads, and those that change only how a model is trained
RUNTIME_FIELDS = ("width", "layers", "mlp_ratio", "context_bits", "context_order", "context_logits")
TRAINING_FIELDS = ("population", "rank", "window", "sigma_shift", "fitness", "alpha_q16", "alpha_halflife",
                   "momentum_shift", "pair_state", "seed", "optimizer", "shared_rows", "step_shift", "elite_shift",
                   "spsa_rounding", "sepcma_damping", "anchor_decay", "context_credit", "context_mirror",
                   "context_decay")
MAGIC = b"INTLMRT\0"
VERSION = 1
ALIGN = 16
NAME_BYTES = 16
CHECK_BYTES = 32
DENSE = ("embed", "gru", "gru_bias", "norm", "up", "down", "out_norm", "head", "head_bias")
CONTEXT = "context"  # the context tables' checkpoint array, when the config has them
SAMPLER_TABLE = "exp2_neg"
MODEL_FILE = "model.intlm"
SOURCE_FILE = "runtime.c"
PREFIX = struct.Struct("<8sII32s")  # magic, version, header size, hash
FIXED = struct.Struct(f"<6IIQ64s{CHECK_BYTES}s")  # config, tensor count, step, checkpoint hash, check bytes
ENTRY = struct.Struct(f"<{NAME_BYTES}sII4IQQ")


def runtime_source() -> Path:
    """The C runtime shipped with the package."""
    return Path(str(resources.files("intlm") / SOURCE_FILE))


def model_bytes(run, checkpoint_hash: str) -> bytes:
    """The model file of a loaded run (run.Run) as bytes."""
    cfg = run.cfg
    settings = [f.name for f in dataclasses.fields(cfg) if f.name not in RUNTIME_FIELDS + TRAINING_FIELDS
                and getattr(cfg, f.name) != f.default]
    if settings:
        raise IntlmError(f"the C runtime does not know the setting(s) {', '.join(settings)} of this model")
    tables = context.tables(cfg) is not None  # without, their order and logits are written as 0
    names = DENSE + ((CONTEXT,) if tables else ())
    params = sorted(set(run.params) - set(names))
    if params:  # a parameter this runtime would not read: its output could not be the sampler's
        raise IntlmError(f"the C runtime does not know the parameter(s) {', '.join(params)} of this model")
    arrays = run.arrays()  # by checkpoint name
    tensors = [(name, np.ascontiguousarray(arrays[name])) for name in names]
    if any(a.dtype != np.int8 for _, a in tensors):
        raise IntlmError("the C runtime reads int8 parameters only")
    tensors.append((SAMPLER_TABLE, np.ascontiguousarray(EXP2_NEG, dtype="<i4")))
    check = bytes(generate(run.params, cfg, b"", CHECK_BYTES, 16, 0, 0))

    header = PREFIX.size + FIXED.size + ENTRY.size * len(tensors)
    offset = -(-header // ALIGN) * ALIGN
    entries, body = [], bytearray()
    for name, a in tensors:
        dims = list(a.shape) + [1] * (4 - a.ndim)  # at most 4: the shapes are the config's
        entries.append(ENTRY.pack(name.encode().ljust(NAME_BYTES, b"\0"), a.itemsize, a.ndim, *dims,
                                  offset + len(body), a.nbytes))
        body += a.tobytes()
        body += bytes(-len(body) % ALIGN)
    fixed = FIXED.pack(cfg.width, cfg.layers, cfg.mlp_ratio, cfg.context_bits, cfg.context_order * tables,
                       cfg.context_logits * tables, len(tensors), run.step, checkpoint_hash.encode(), check)
    rest = fixed + b"".join(entries) + bytes(offset - header) + bytes(body)
    digest = hashlib.sha256(MAGIC + struct.pack("<II", VERSION, offset) + rest).digest()
    return PREFIX.pack(MAGIC, VERSION, offset, digest) + rest


def export(path, out_dir) -> tuple:
    """Write ``out_dir``/model.intlm from the checkpoint at ``path`` (a run folder: its newest intact
    checkpoint) and copy the C runtime beside it; returns (model file, C source)."""
    run, ck = load_checkpoint_run(path, quiet=False)
    data = model_bytes(run, ck.content_hash)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise IntlmError(f"--out {out} is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    model, source = out / MODEL_FILE, out / SOURCE_FILE
    atomic_file(model, data)
    atomic_file(source, runtime_source().read_bytes())
    return model, source
