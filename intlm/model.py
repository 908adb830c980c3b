"""The integer byte-level recurrent model, as a plain NumPy reference (the spec every backend matches).

    x = clip8(embed[byte] + rows[:, :d])              # int8 vector of width d; rows: the context
    for each layer:                                   #   tables' rows for the last bytes (context.py)
        h = GRU(norm(x), h);  x = clip8(x + h)       # single-gate GRU, state carried across bytes
        x = clip8(x + down(relu(up(norm(x)))))       # MLP d -> mlp_ratio*d -> d
    logits = clip8(head(norm(x)) + head_bias + rows[:, d:])  # 1/16-bit units; rows[:, d:] with context logits
    mirror = clip8(head(norm(x)) + head_bias + mirror_rows[:, d:])  # with context mirrors: the rows' logit
                                                                     # perturbation negated (context.py)

All values are int8-range integers (16 = 1.0); products accumulate in int32 (the NumPy code uses
int64 arrays, and ``config.worst_case_bounds`` proves int32 suffices). A population member adds its
rank-r perturbation to every matrix without materialising it: x.W^T + s * (((x.B) >> 4) . A^T >> sigma),
with s = +1 / -1 for the two members of an antithetic pair; vectors get s * (e >> sigma).

Departures from the paper's EGG, for learning: ReLU between the MLP matmuls (EGG has none, so its
MLP is nearly linear below saturation), a head bias, and power-of-two matmul rescaling for every
width with the init scale making up the difference.
"""

import numpy as np

from . import context
from .arith import ONE, clip8, div_round, isqrt, log_likelihood, matmul_shift, rshift_round
from .config import Config
from .noise import INIT_STEP, NOISE_MULT, rank_mult, stream, stream_key
from .params import VOCAB, Tensor, tensors

GATE_BIAS = 127  # f in [-127, 127] -> gate gamma = f + 127 in [0, 254], read as gamma / 256


def init_params(cfg: Config) -> dict:
    """Deterministic int8 initial parameters from the config seed (same noise hash, INIT_STEP)."""
    params = {}
    for t in tensors(cfg):
        if t.kind == "table":
            params[t.name] = np.zeros(t.shape, dtype=np.int8)  # starts as no table: the model's function unchanged
            continue
        if t.name in ("norm", "out_norm"):
            params[t.name] = np.full(t.shape, ONE, dtype=np.int8)
            continue
        if t.kind == "vector":
            params[t.name] = np.zeros(t.shape, dtype=np.int8)
            continue
        n = t.shape[-1]
        size = t.shape[-2] * n
        # std 16 noise scaled to std 2**shift / sqrt(n), so a matmul keeps activations at std ~16;
        # the embedding keeps std 16 and the head starts 4x smaller (near-uniform predictions).
        if t.name == "embed":
            mult = 256
        else:
            mult = isqrt((1 << (2 * matmul_shift(n) + 16 - 8)) // n)
            if t.name == "head":
                mult //= 4
        blocks = [stream(stream_key(cfg.seed, t.tensor_id(b), INIT_STEP, 0), size).astype(np.int32)
                  for b in range(t.blocks)]
        w = rshift_round(np.stack(blocks).astype(np.int64) * mult, 8)
        params[t.name] = clip8(w).reshape(t.shape).astype(np.int8)
    return params


def state_shape(cfg: Config, rows: int) -> tuple:
    """The recurrent state of ``rows`` streams: each layer's GRU state, and with context tables one
    more row that holds the bytes read before (context.history_slots)."""
    return (rows, cfg.layers + context.state_rows(cfg), cfg.width)


def noise_layout(cfg: Config, t: Tensor) -> tuple:
    """(values per stream, noise multiplier) of a tensor's per-pair noise stream."""
    if t.kind == "matrix":
        m, n = t.shape[-2:]
        return (m + n) * cfg.rank, rank_mult(cfg.rank)
    return t.shape[-1], NOISE_MULT


def split_streams(cfg: Config, t: Tensor, block):
    """Shape a (pairs, blocks, values) int8 block of streams as the tensor's noise: (A, B) for a
    matrix (A row-major first, then B), e for a vector."""
    pairs = block.shape[0]
    if t.kind == "vector":
        return block.reshape((pairs,) + t.shape)
    m, n = t.shape[-2:]
    lead, r = t.shape[:-2], cfg.rank
    return (block[:, :, : m * r].reshape((pairs,) + lead + (m, r)),
            block[:, :, m * r:].reshape((pairs,) + lead + (n, r)))


def make_noise(cfg: Config, step: int, pairs=None) -> dict:
    """Every pair's perturbation factors at one step: matrices -> (A, B), vectors -> e.

    A has shape (pairs, *lead, rows, rank), B (pairs, *lead, cols, rank), e (pairs, *shape); all int8.
    """
    pairs = range(cfg.pairs) if pairs is None else pairs
    out = {}
    for t in tensors(cfg):
        if t.kind == "table":
            out[t.name] = context.make_noise(cfg, step, pairs)
            continue
        count, mult = noise_layout(cfg, t)
        block = np.stack([np.stack([stream(stream_key(cfg.seed, t.tensor_id(b), step, p), count, mult)
                                    for b in range(t.blocks)]) for p in pairs])
        out[t.name] = split_streams(cfg, t, block)
    return out


class Members:
    """Which pair and sign each row of a batch is: the perturbation it carries (or none), and whether
    its mirror is scored too (context.mirrors)."""

    def __init__(self, noise, cfg, rows, mirror=False):
        self.noise, self.cfg, self.mirror = noise, cfg, mirror
        idx = np.arange(rows)
        self.pair = idx // 2
        self.sign = (1 - 2 * (idx % 2)).astype(np.int64)

    def vector(self, name, value, *lead):
        """The perturbed vector parameter for every member: (rows, n)."""
        v = value[lead].astype(np.int64)[None, :]
        if self.noise is None:
            return v
        e = self.noise[name][(self.pair,) + lead].astype(np.int64)
        return clip8(v + self.sign[:, None] * rshift_round(e, self.cfg.sigma_shift))

    def linear(self, name, weight, x, *lead):
        """Rescaled x . W^T plus each member's low-rank perturbation, before clipping: (rows, m)."""
        w = weight[lead].astype(np.int64)
        acc = x @ w.T
        if self.noise is not None:
            a, b = self.noise[name]
            a = a[(self.pair,) + lead].astype(np.int64)  # (rows, m, r)
            b = b[(self.pair,) + lead].astype(np.int64)  # (rows, n, r)
            xb = rshift_round(np.einsum("pn,pnr->pr", x, b), 4)
            low_rank = rshift_round(np.einsum("pr,pmr->pm", xb, a), self.cfg.sigma_shift)
            acc = acc + self.sign[:, None] * low_rank
        return rshift_round(acc, matmul_shift(w.shape[1]))

    def embed(self, weight, byte):
        x = weight[byte].astype(np.int64)
        if self.noise is not None:
            a, b = self.noise["embed"]
            a = a[self.pair, byte].astype(np.int64)  # (rows, r)
            b = b[self.pair].astype(np.int64)  # (rows, d, r)
            pert = rshift_round(np.einsum("pr,pdr->pd", a, b), 4 + self.cfg.sigma_shift)
            x = clip8(x + self.sign[:, None] * pert)
        return x


def layer_norm(x, gain):
    """x / mean|x| * gain, per row; the divisor is clamped to >= 1 after the sum, so never 0."""
    d = x.shape[-1]
    total = np.maximum(np.abs(x).sum(axis=-1, keepdims=True), 1)
    return clip8(div_round(x * gain * d, total))


def read_byte(params, cfg: Config, byte, state, members: Members):
    """The model reads one byte for a batch of rows: updates ``state`` (rows, layers, d) in place and
    returns the logits of the next byte; with ``members.mirror``, (the logits, the mirrors' logits)."""
    state[byte == 0] = 0  # a 0 byte starts a document: forget the previous one
    x, context_logits, mirror_logits = context.add_rows(params, cfg, members.embed(params["embed"], byte), byte,
                                                        state, members)
    for l in range(cfg.layers):
        h = state[:, l].astype(np.int64)
        a = layer_norm(x, members.vector("norm", params["norm"], l, 0))
        gru = params["gru"]
        f = clip8(members.linear("gru", gru, a, l, 0) + members.linear("gru", gru, h, l, 1)
                  + members.vector("gru_bias", params["gru_bias"], l, 0))
        gamma = f + GATE_BIAS
        reset = rshift_round(gamma * h, 8)
        cand = clip8(members.linear("gru", gru, a, l, 2) + members.linear("gru", gru, reset, l, 3)
                     + members.vector("gru_bias", params["gru_bias"], l, 1))
        h = clip8(h + rshift_round(gamma * (cand - h), 8))
        state[:, l] = h
        x = clip8(x + h)
        a = layer_norm(x, members.vector("norm", params["norm"], l, 1))
        hid = np.maximum(clip8(members.linear("up", params["up"], a, l)), 0)
        x = clip8(x + clip8(members.linear("down", params["down"], hid, l)))
    a = layer_norm(x, members.vector("out_norm", params["out_norm"]))
    head = members.linear("head", params["head"], a) + members.vector("head_bias", params["head_bias"])
    logits = clip8(head + context_logits)
    return logits if mirror_logits is None else (logits, clip8(head + mirror_logits))


def forward(params, cfg: Config, tokens, state, noise=None, mirror=False):
    """Log-likelihoods (rows, T) in 1/256 bits of tokens[:, 1:] given tokens[:, :-1].

    Without noise each row is one stream of the unperturbed model. With noise, row i is population
    member i: pair i // 2, sign + for even i, - for odd i (tokens rows are per member); ``mirror``
    (with context tables): each member's and its mirror's, (rows, 2, T) (context.mirrors).
    ``state`` (rows, layers, d), any integer dtype, is carried through the window and updated.
    """
    members = Members(noise, cfg, tokens.shape[0], mirror=mirror and noise is not None and context.mirrors(cfg))
    work = state.astype(np.int64)
    T = tokens.shape[1] - 1
    ll = np.zeros((tokens.shape[0], 2, T) if members.mirror else (tokens.shape[0], T), dtype=np.int32)
    for t in range(T):
        out = read_byte(params, cfg, tokens[:, t].astype(np.int64), work, members)
        target = tokens[:, t + 1]
        if members.mirror:
            ll[:, 0, t], ll[:, 1, t] = log_likelihood(out[0], target), log_likelihood(out[1], target)
        else:
            ll[:, t] = log_likelihood(out, target)
    state[...] = work
    return ll


def pair_range(cfg: Config, p0: int = 0, p1=None, noise=None) -> tuple:
    """(p0, p1) of pairs [p0, p1) of the population (p1 None: cfg.pairs), checked non-empty and in
    range, and, given ``noise``, that it holds exactly those pairs."""
    p1 = cfg.pairs if p1 is None else p1
    if not 0 <= p0 < p1 <= cfg.pairs:
        raise ValueError(f"pair range [{p0}, {p1}) is not a non-empty range of the {cfg.pairs} pairs")
    if noise is not None and noise["head_bias"].shape[0] != p1 - p0:
        raise ValueError(f"noise holds {noise['head_bias'].shape[0]} pairs, the range [{p0}, {p1}) {p1 - p0}")
    return p0, p1


def population_fitness(params, cfg: Config, noise, pair_tokens, state, p0: int = 0, p1=None, positions=False):
    """Each member's summed log-likelihood over its window, for the members 2*p0 .. 2*p1 of pairs
    [p0, p1) (p1 None: every pair); the two members of pair p read the same bytes (pair_tokens row p)
    and carry pair p's perturbation, ``noise`` holding the range's pairs (make_noise over
    range(p0, p1)). ``state`` (population, layers, d) int8: rows 2*p0 .. 2*p1 are carried and
    updated, the others left alone. Ranges combine exactly: fitnesses concatenate. ``positions``: each
    member's log-likelihoods (members, window) int32 instead of their sum. With context mirrors
    (context.mirrors) a member's fitness is its own plus its mirror's, and its log-likelihoods are
    (members, 2, window): its own, then its mirror's."""
    p0, p1 = pair_range(cfg, p0, p1, noise)
    ll = forward(params, cfg, np.repeat(pair_tokens[p0:p1], 2, axis=0), state[2 * p0:2 * p1], noise,
                 mirror=context.mirrors(cfg))
    return ll if positions else window_fitness(ll)


def window_fitness(ll):
    """Members' window fitnesses (members,) int32 from their log-likelihoods (members, T), or (members,
    2, T) with mirrors: the sum of all."""
    return ll.reshape(len(ll), -1).sum(axis=1, dtype=np.int64).astype(np.int32)

