"""Run configuration: every setting that changes the trained bytes, checked up front.

All fields are integers or short strings so a config round-trips through JSON exactly and nothing
float enters the training path.
"""

import dataclasses

from . import params
from .errors import IntlmError
from .noise import NOISE_MAX, NOISE_MULT, rank_mult
from .optimizers import NAMES as OPTIMIZERS
from .optimizers.units import PATH_MAX, RANK_WEIGHT_ONE, SCALE_MAX

FITNESS_MODES = ("sign", "rank", "linear")
PAIR_STATES = ("mean", "own")
CONTEXT_CREDITS = ("window", "reads", "graded")  # what a table row's sums count (context.credit)
SPSA_ROUNDINGS = ("stochastic", "carry")
RANK_LEVELS = 8  # graded fitness takes values in -RANK_LEVELS .. RANK_LEVELS
LINEAR_SPAN = 3  # linear fitness and graded credit reach RANK_LEVELS at this many times their mean |difference|
INT32_MAX = (1 << 31) - 1
INT64_MAX = (1 << 63) - 1
POPULATION_MAX = 1 << 30
# The update sum Z of a matrix is an int16 product over (pair, rank component) terms: UPDATE_CHUNK
# terms at a time accumulate in int32 (the VNNI product's accumulator), the chunks add up in int64.
UPDATE_CHUNK = 1 << 15
# The accumulators whose worst case is held to int64 rather than int32: they live in the update only
# (once per step, not per token), so the wider type costs nothing that matters and no population caps them.
INT64_ACCUMULATORS = ("update sum Z", "momentum M", "sepcma weighted sums", "cem elite sums", "sepcma path norm")
# Fields added after the first checkpoint format, with the value that means "as before": left out of
# a config's JSON while they have it, so a run that does not use them writes the bytes it always did,
# and a checkpoint written before them reads as before.
LATER_FIELDS = {"optimizer": "eggroll", "shared_rows": 8, "step_shift": 8, "elite_shift": 2, "anchor_decay": 0,
                "sepcma_damping": 1, "context_bits": 0, "context_order": 2, "context_logits": 0, "context_credit": "window",
                "context_mirror": 0, "context_decay": 0}
# spsa's rounding is written for spsa runs only, and only when it is not the stochastic rounding that
# every spsa run used before the field existed (so those checkpoints read and write as they did)
SPSA_ROUNDING_BEFORE = "stochastic"
SEPCMA_DAMPING_MAX = 1024  # beyond, the global step size would barely adapt within a day's steps
ANCHOR_DECAY_MAX = 16  # a pull of |w - anchor| / 2**16 per step is already negligible
# the tables' decay toward zero (context.decay): below 7 a row's pull, 64 steps' worth of 2**-K, would
# be all of it (|w| * 64 >> K >= |w|), zeroing each slice it passes; above 16 negligible like the anchor's
CONTEXT_DECAY = (7, 16)
CONTEXT_BITS = (8, 20)  # the context tables' rows: 2**8 .. 2**20 (context.py)
CONTEXT_ORDERS = (2, 8)  # tables for the last 2 .. N bytes, N at most 8 (a hash key is 8 bytes)
# What `intlm pretrain` adds to the defaults below: the context tables that learned fastest per
# second (scripts/learning/README.md, "Context tables: the targets met"), their rows into the logits
# too and each row credited by the bytes it can change, each credit graded by its size ("Reads credit",
# "Graded credit"), each member scored again with its rows' logit perturbation negated, and the rows
# decayed toward zero so that what only a few training bytes say is not memorised ("Mirrors and decay"),
# and with those a table for the last 5 bytes too ("A fifth order, with mirrors and decay").
PRETRAIN_CONTEXT = {"context_bits": 16, "context_order": 5, "context_logits": 1, "context_credit": "graded",
                    "context_mirror": 1, "context_decay": 9}


@dataclasses.dataclass(frozen=True)
class Config:
    """Defaults are the settings that learned fastest per second of wall time on a 2-core CPU
    (Shakespeare, see scripts/learning/README.md): a narrow model, graded fitness, momentum. ``intlm
    pretrain`` adds context tables to them (PRETRAIN_CONTEXT); a Config's own defaults stay the model
    without tables, which every optimiser, backend and earlier study command runs."""
    width: int = 32
    layers: int = 1
    mlp_ratio: int = 4
    population: int = 8192
    rank: int = 1
    window: int = 64
    sigma_shift: int = 3  # perturbation scale sigma = 2**-sigma_shift
    fitness: str = "rank"
    alpha_q16: int = 32768  # fraction of weights moved at step 0, in 1/65536
    alpha_halflife: int = 1000  # alpha_t = alpha_0 * H / (H + t)
    momentum_shift: int = 3  # 0: plain EGGROLL; k: threshold M = M - M/2**k + Z instead of Z
    pair_state: str = "mean"  # "mean": both members of a pair start each step from their mean state
    seed: int = 0
    # the optimiser (intlm/optimizers/) and the settings only some optimisers read
    optimizer: str = "eggroll"
    shared_rows: int = 8  # sepcma, cem: streams every member reads (ranked members must see the same bytes)
    step_shift: int = 8  # spsa: learning rate 2**-step_shift per unit of noise; cem: refit rate 2**-step_shift
    elite_shift: int = 2  # cem: the elite is population >> elite_shift members
    spsa_rounding: str = "carry"  # spsa: how a step below one int8 unit moves a weight (spsa.py)
    sepcma_damping: int = 1  # sepcma: d_sigma, the global step size adapts 1/d_sigma as fast (sepcma.py)
    anchor_decay: int = 0  # 0: off; K: pull weights toward their anchor at rate 2**-K (anchor.py)
    context_bits: int = 0  # 0: off; K: context tables of 2**K rows indexed by the last bytes (context.py)
    context_order: int = 2  # N: one table for each of the last 2, 3, .. N bytes
    context_logits: int = 0  # 1: each context row also adds 256 corrections to the logits (context.py)
    context_credit: str = "window"  # reads: a row's sums count only the bytes its reads can change, graded: and by how much (context.credit)
    context_mirror: int = 0  # 1: each member is scored again with its rows' logit perturbation negated (context.mirrors)
    context_decay: int = 0  # 0: off; K in CONTEXT_DECAY: the tables' entries decay toward zero at 2**-K a step (context.decay)

    @property
    def pairs(self) -> int:
        return self.population // 2

    @property
    def mlp_width(self) -> int:
        return self.width * self.mlp_ratio

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        if self.optimizer != "spsa" or self.spsa_rounding == SPSA_ROUNDING_BEFORE:
            del d["spsa_rounding"]
        return {k: v for k, v in d.items() if k not in LATER_FIELDS or v != LATER_FIELDS[k]}

    @classmethod
    def from_json(cls, d: dict) -> "Config":
        if not isinstance(d, dict):
            raise IntlmError(f"the config is {type(d).__name__}, not a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise IntlmError(f"unknown config fields {sorted(unknown)}")
        for f in dataclasses.fields(cls):  # checked like any input: a width of "32" would fail deep inside
            if f.name in d and type(d[f.name]) is not f.type:  # type(): a bool is no int here
                raise IntlmError(f"config field {f.name} is {d[f.name]!r}, not {'an integer' if f.type is int else 'a string'}")
        if d.get("optimizer") == "spsa":
            d = {"spsa_rounding": SPSA_ROUNDING_BEFORE, **d}
        # a later field left out means "as before", whatever its default is now
        return cls(**{**LATER_FIELDS, **d})

    def check(self) -> "Config":
        """Raise IntlmError (one line) for settings the model or the integer bounds cannot take."""
        def need(ok, msg):
            if not ok:
                raise IntlmError(msg)

        need(2 <= self.population <= POPULATION_MAX and self.population % 2 == 0,
             f"population must be an even number between 2 and 2**30 (antithetic pairs), got {self.population}")
        need(16 <= self.width <= 1024 and self.width % 16 == 0,
             f"width must be a multiple of 16 between 16 and 1024, got {self.width}")
        need(1 <= self.layers <= 64, f"layers must be between 1 and 64, got {self.layers}")
        need(1 <= self.mlp_ratio <= 8, f"mlp ratio must be between 1 and 8, got {self.mlp_ratio}")
        need(1 <= self.rank <= 16, f"rank must be between 1 and 16, got {self.rank}")
        need(1 <= self.window <= 100_000, f"window must be between 1 and 100000 bytes, got {self.window}")
        need(0 <= self.sigma_shift <= 8, f"sigma shift must be between 0 and 8, got {self.sigma_shift}")
        need(self.fitness in FITNESS_MODES, f"fitness must be one of {FITNESS_MODES}, got {self.fitness!r}")
        need(1 <= self.alpha_q16 <= 65536, "alpha must be in (0, 1]")
        need(self.alpha_halflife >= 1, f"alpha half-life must be >= 1 step, got {self.alpha_halflife}")
        need(self.pair_state in PAIR_STATES, f"pair state must be one of {PAIR_STATES}, got {self.pair_state!r}")
        need(0 <= self.momentum_shift <= 8, f"momentum shift must be between 0 and 8, got {self.momentum_shift}")
        need(0 <= self.seed < (1 << 63), f"seed must be between 0 and 2**63-1, got {self.seed}")
        need(self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        need(1 <= self.shared_rows <= 4096, f"shared rows must be between 1 and 4096, got {self.shared_rows}")
        need(0 <= self.step_shift <= 16, f"step shift must be between 0 and 16, got {self.step_shift}")
        need(self.spsa_rounding in SPSA_ROUNDINGS,
             f"spsa rounding must be one of {SPSA_ROUNDINGS}, got {self.spsa_rounding!r}")
        need(self.optimizer == "spsa" or self.spsa_rounding == Config.spsa_rounding,
             f"--spsa-rounding is spsa's setting: --optimizer {self.optimizer} has no rounding to choose")
        need(1 <= self.sepcma_damping <= SEPCMA_DAMPING_MAX,
             f"sepcma damping must be between 1 and {SEPCMA_DAMPING_MAX}, got {self.sepcma_damping}")
        need(self.optimizer == "sepcma" or self.sepcma_damping == Config.sepcma_damping,
             f"--sepcma-damping is sepcma's setting: --optimizer {self.optimizer} has no step-size adaptation")
        need(1 <= self.elite_shift <= 8, f"elite shift must be between 1 and 8, got {self.elite_shift}")
        need(self.optimizer != "cem" or self.population >> self.elite_shift >= 1,
             f"cem keeps population >> elite shift members: {self.population} >> {self.elite_shift} is none")
        need(0 <= self.anchor_decay <= ANCHOR_DECAY_MAX,
             f"anchor decay must be between 0 (off) and {ANCHOR_DECAY_MAX}, got {self.anchor_decay}")
        need(not self.anchor_decay or self.optimizer == "eggroll",
             f"--anchor-decay pulls EGGROLL's weights: --optimizer {self.optimizer} keeps its own mean")
        lo, hi = CONTEXT_BITS
        need(self.context_bits == 0 or lo <= self.context_bits <= hi,
             f"context bits must be 0 (no context table) or between {lo} and {hi}, got {self.context_bits}")
        lo, hi = CONTEXT_ORDERS
        need(lo <= self.context_order <= hi, f"context order must be between {lo} and {hi}, got {self.context_order}")
        need(self.context_bits or self.context_order == lo, "--context-order needs --context-bits")
        need(self.context_logits in (0, 1), f"context logits must be 0 or 1, got {self.context_logits}")
        need(self.context_bits or not self.context_logits, "--context-logits needs --context-bits")
        need(self.context_credit in CONTEXT_CREDITS,
             f"context credit must be one of {CONTEXT_CREDITS}, got {self.context_credit!r}")
        need(self.context_bits or self.context_credit == "window", "--context-credit needs --context-bits")
        need(self.context_credit == "window" or self.optimizer == "eggroll",
             f"--context-credit {self.context_credit} is EGGROLL's sparse update: --optimizer {self.optimizer} updates every row")
        need(self.context_mirror in (0, 1), f"context mirror must be 0 or 1, got {self.context_mirror}")
        need(not self.context_mirror or (self.context_logits and self.context_credit != "window"),
             "--context-mirror 1 scores the tables' logit entries apart: it needs --context-logits 1 and "
             "--context-credit reads or graded")
        lo, hi = CONTEXT_DECAY
        need(self.context_decay == 0 or lo <= self.context_decay <= hi,
             f"context decay must be 0 (off) or between {lo} and {hi}, got {self.context_decay}")
        need(self.context_bits or not self.context_decay, "--context-decay needs --context-bits")
        need(not self.context_decay or self.optimizer == "eggroll",
             f"--context-decay is a step of EGGROLL's update: --optimizer {self.optimizer} updates the tables its own way")
        for what, bound in worst_case_bounds(self).items():
            bits, limit = (64, INT64_MAX) if what in INT64_ACCUMULATORS else (32, INT32_MAX)
            need(bound <= limit, f"settings overflow int{bits} in {what} (worst case {bound}): "
                                 f"use fewer pairs, a lower rank, a smaller width or a shorter window"
                                 + (" (or --context-mirror 0)" if self.context_mirror else ""))
        return self


def worst_case_bounds(cfg: Config) -> dict:
    """Largest magnitude each integer intermediate can reach, from the ranges of its inputs; each must
    fit int32, except INT64_ACCUMULATORS, which must fit int64.

    Inputs: activations |x| <= 127, weights |w| <= 127, noise factors |a|, |b| <= rank-scaled max.
    """
    n_max = max(cfg.width, cfg.mlp_width)
    f_max = 1 if cfg.fitness == "sign" else RANK_LEVELS
    factor = (NOISE_MAX * rank_mult(cfg.rank) + NOISE_MULT - 1) // NOISE_MULT
    xb = n_max * 127 * factor  # x . B over one rank component
    xb_shifted = (xb + 8) >> 4
    low_rank = cfg.rank * xb_shifted * factor  # (x.B >> 4) . A^T before the sigma shift
    dot = n_max * 127 * 127 + low_rank  # x . W^T plus the low-rank term
    z_max = cfg.pairs * cfg.rank * f_max * factor * factor  # vectors: pairs * f_max * NOISE_MAX, less
    return {
        "x.B": xb,
        "low-rank term": low_rank,
        "matmul accumulator": dot,
        "layer norm": 127 * 127 * cfg.width,
        "update partial sum": min(cfg.pairs * cfg.rank, UPDATE_CHUNK) * f_max * factor * factor,
        "update sum Z": z_max,
        # |M - sign(M)(|M| >> k) + Z| <= |M|(1 - 2**-k) + 1 + |Z|max, so |M| stays <= (|Z|max + 1) 2**k;
        # spending the threshold only shrinks |M|
        "momentum M": (z_max + 1) << cfg.momentum_shift,
        "window log-likelihood": cfg.window * 256 * 64 * (1 + cfg.context_mirror),  # a mirror's is added to its member's
        # sepcma and cem (optimizers/units.py): a member's offset z * scale / 16, sepcma's sums of it,
        # of z and of z**2 weighted by recombination weights summing to RANK_WEIGHT_ONE, cem's sums of
        # it and its square over the elite, the squared norm of sepcma's path
        "member offset": (NOISE_MAX * SCALE_MAX + 8) >> 4,
        "sepcma weighted sums": RANK_WEIGHT_ONE * max((NOISE_MAX * SCALE_MAX + 8) >> 4, NOISE_MAX ** 2),
        "cem elite sums": (cfg.population >> cfg.elite_shift) * ((NOISE_MAX * SCALE_MAX + 8) >> 4) ** 2,
        "sepcma path norm": PATH_MAX ** 2 * parameter_count(cfg),
        # spsa's carried step: the residual (< half a unit in 1/2**step_shift units) plus f * noise;
        # the residual left after a move is below half a unit, so it fits int16 for any step shift <= 16
        "spsa carried step": ((1 << cfg.step_shift) >> 1) + f_max * NOISE_MAX,
    }


def parameter_count(cfg: Config) -> int:
    """Weights of the model: the sizes of its parameter list (params.tensors)."""
    return params.count(cfg)
