"""Anchored Weight Decay (``--anchor-decay K``): an integer pull of every weight toward its anchor.

The anchor is the weights a run started from (the ``--init`` checkpoint's, or a fresh run's
initial weights). After each update, a weight w with anchor a and distance d = w - a steps one
toward a when u < |d|, with u a uniform K-bit integer from the counter hash of (seed, step, tensor,
index). So it is pulled with probability min(|d|, 2**K) / 2**K: in expectation weight decay toward
the anchor at rate 2**-K (L2 toward the start, "L2-SP"), with unit steps like the update's own.
K = 0 is off. The pull never overshoots or crosses the anchor: it moves a weight by one only when
|d| >= 1, to |d| - 1 on the same side, and a weight on its anchor never moves.

Why proportional, and why it tethers drift: an ES update moves a weight +-1 at a time, and where the
fitness says nothing those moves are a random walk (about alpha_t moves per step). Against a pull of
|d| / 2**K per step that walk settles at a spread of about sqrt(alpha_t * 2**(K-1)) around the anchor
(an integer Ornstein-Uhlenbeck process), while a weight the fitness pushes the same way at rate p per
step settles about p * 2**K away: noise is held close, signal is let go far. A constant pull (one
step every 2**K steps, whatever the distance) would hold a walk at about alpha_t * 2**(K-1), and
slow a weight that must move for the new task by as much near the anchor as far from it.

Every parameter is pulled, a context table's rows included, whether or not a window read them this
step: a row's pull, like any weight's, is decay toward where it started, and a row no window has read
for a while is exactly the one whose drift nothing checks. (Its cost is one hash per table weight a
step, about as much as the update's dense pass over the table.)

One implementation for every backend: it is a few elementwise passes per step over the
parameters (the update's share of a step, not the forward's), on host arrays that every backend
updates in place.
"""

import numpy as np

from .params import tensors
from .noise import hashes, stream_key

ANCHOR_TENSOR = (1 << 32) - 3  # the noise-key tensor id of the pull's draws (no parameter uses it)


def pull(params, anchor, cfg, step: int) -> int:
    """Pull ``params`` toward ``anchor`` in place, at rate 2**-cfg.anchor_decay (a no-op at 0);
    returns the number of weights pulled. ``step``: the step whose update was just applied."""
    k = cfg.anchor_decay
    if not k:
        return 0
    pulled = 0
    for t in tensors(cfg):
        w = params[t.name]
        d = w.astype(np.int16) - anchor[t.name]
        u = (hashes(stream_key(cfg.seed, ANCHOR_TENSOR, step, t.index), w.size) >> np.uint64(64 - k))
        move = np.where(u.astype(np.int64).reshape(w.shape) < np.abs(d), np.sign(d), 0)
        w -= move.astype(np.int8)
        pulled += int(np.count_nonzero(move))
    return pulled
