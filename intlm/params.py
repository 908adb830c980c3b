"""The model's parameters: one list of (name, shape, kind), which every feature walks.

A kind says how a parameter is perturbed, read and updated:

- matrix: a stack of (rows, cols) blocks; a pair perturbs it by a rank-r product A B^T (model.py),
  its update sum is sum_p f_p A_p B_p^T and its threshold the matrix one (es.py);
- vector: a stack of rows; a pair perturbs every element (model.py), sum_p f_p e_p (es.py);
- table: a stack of hashed context tables (context.py); a member reads a few rows of it, perturbed
  like a matrix's rows, and its update is sparse: only the rows the pairs read, each with the
  threshold of the pairs that read it.

Everything that holds one array per parameter (the checkpoint, momentum, the anchor, the full-rank
optimisers' means, noise and steps) walks ``tensors(cfg)`` and treats a table as one more array; only
the perturbed read and the EGGROLL update sums differ by kind.
"""

import dataclasses
import math

VOCAB = 256
KINDS = ("matrix", "vector", "table")
TABLE = "context"  # the table parameter's name (and checkpoint array)


@dataclasses.dataclass(frozen=True)
class Tensor:
    """One parameter array; matrices and tables are stacks of (rows, cols) blocks, vectors stacks of rows."""
    name: str
    shape: tuple
    kind: str  # one of KINDS
    index: int  # position in the parameter list, part of every noise key

    @property
    def blocks(self) -> int:
        lead = self.shape[:-1] if self.kind == "vector" else self.shape[:-2]
        return math.prod(lead)  # Python ints: read several times per step, and np.prod is slow on tuples

    def tensor_id(self, block: int) -> int:
        return (self.index << 20) | block


def tensors(cfg) -> list:
    """The parameters of ``cfg``'s model, in noise-key order: the dense ones, then (with context
    bits) the table of N - 1 hashed context tables of 2**K rows."""
    d, h, L = cfg.width, cfg.mlp_width, cfg.layers
    specs = [
        ("embed", (VOCAB, d), "matrix"),
        ("gru", (L, 4, d, d), "matrix"),  # W_f, U_f, W_h, U_h as (out, in)
        ("gru_bias", (L, 2, d), "vector"),  # b_f, b_h
        ("norm", (L, 2, d), "vector"),  # gains before the GRU and before the MLP
        ("up", (L, h, d), "matrix"),
        ("down", (L, d, h), "matrix"),
        ("out_norm", (d,), "vector"),
        ("head", (VOCAB, d), "matrix"),
        ("head_bias", (VOCAB,), "vector"),
    ]
    if cfg.context_bits:  # a row: width entries added to the input, and with context logits 256 to the logits
        specs.append((TABLE, (cfg.context_order - 1, 1 << cfg.context_bits, d + VOCAB * cfg.context_logits), "table"))
    return [Tensor(name, shape, kind, i) for i, (name, shape, kind) in enumerate(specs)]


def count(cfg) -> int:
    """Weights of the model."""
    return sum(math.prod(t.shape) for t in tensors(cfg))
