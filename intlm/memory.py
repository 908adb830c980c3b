"""The memory a command needs, estimated from its config before anything is allocated, and the
refusal, in one line with the estimate and what this machine has available, of what cannot fit.

Estimates are of peak resident bytes, the sum of what is alive at the peak:

- BASE: the interpreter with NumPy, zarr and (Numba) the compiled kernels, measured;
- training: the corpus (both splits, in memory), the run's integer state (the parameters, one byte
  each, and per parameter the momentum and the optimiser's and the anchor's state, as many bytes as
  a run of the same settings at width 16 holds; the population's recurrent state), the update sums
  of the dense parameters (int64; the context tables' update is sparse) and a step's working set: per
  pair its window's bytes with the int64 offsets that gather them, its members' log-likelihoods and
  its noise; per member the forward's (MEMBER_BYTES, UNIT_BYTES);
- evaluation: the parameters, ``streams`` streams' state and a block of their activations; the
  corpus is streamed (data.Split), whatever its size;
- sampling: the parameters and one stream.

tests/test_reliability.py holds the training estimate within a factor of 2 of measured peaks.
"""

import dataclasses
import os

from .config import Config, parameter_count
from .errors import IntlmError

# measured peaks of the interpreter with NumPy, zarr, click and (numba) the compiled kernels, by backend
BASE = {"numba": 190 << 20, "numpy": 60 << 20}
# a member's forward working set besides its noise: its 256 logits (int64) and their temporaries; the
# NumPy spec vectorises over the population and holds several such arrays per member (measured: 3 KB
# a member with Numba, 14 KB with NumPy, at width 16)
MEMBER_BYTES = {"numba": 2560, "numpy": 13312}
UNIT_BYTES = 4  # and per unit of its widest layer, per layer


def available() -> int:
    """Bytes this process can still take: MemAvailable of /proc/meminfo (less, under a cgroup v2
    limit, what the cgroup has left); elsewhere the free physical pages."""
    found = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if found is None:
        try:
            found = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return 1 << 62  # nothing to go by: refuse nothing
    try:
        limit = open("/sys/fs/cgroup/memory.max").read().strip()
        used = int(open("/sys/fs/cgroup/memory.current").read())
        if limit != "max":
            found = min(found, int(limit) - used)
    except (OSError, ValueError):
        pass
    return found


def _state_per_parameter(cfg: Config) -> int:
    """Bytes per parameter besides the parameter itself (momentum, the optimiser's state, the anchor),
    read off a run of the same settings at width 16, one layer, no tables."""
    from . import optimizers
    from .model import init_params

    small = dataclasses.replace(cfg, width=16, layers=1, mlp_ratio=1, population=16, context_bits=0,
                                context_order=Config.context_order)
    params = init_params(small)
    momentum, state = optimizers.get(small.optimizer).init_state(small, params)
    anchor = params if small.anchor_decay else {}  # run.Run.fresh's arrays, without importing run (it imports us)
    held = sum(a.nbytes for arrays in (momentum, state, anchor) for a in arrays.values())
    return -(-held // parameter_count(small))


def _noise_per_pair(cfg: Config) -> int:
    """Bytes of one pair's noise (the NumPy spec's, for a population of one pair)."""
    from .backends import get

    noise = get("numpy").make_noise(dataclasses.replace(cfg, population=2), 0)
    return sum(a.nbytes for v in noise.values() for a in (v if isinstance(v, tuple) else (v,)))


def _members(cfg: Config, rows: int, backend: str) -> int:
    """The forward's working set of ``rows`` members."""
    return rows * (MEMBER_BYTES.get(backend, MEMBER_BYTES["numba"]) + UNIT_BYTES * cfg.width * max(1, cfg.mlp_ratio) * cfg.layers)


def training(cfg: Config, corpus_bytes: int, backend: str = "numba") -> int:
    """Peak resident bytes of training ``cfg`` on a corpus of ``corpus_bytes`` (both splits) with
    ``backend`` (a backend's name)."""
    from . import context, optimizers
    from .model import state_shape

    params, dense = parameter_count(cfg), parameter_count(dataclasses.replace(cfg, context_bits=0))
    rows, layers, width = state_shape(cfg, optimizers.get(cfg.optimizer).state_rows(cfg))
    # windows, log-likelihoods (with mirrors twice, and their sums and differences in int64)
    per_pair = (cfg.window + 1) * (1 + 2 * 8) + 2 * 4 * cfg.window + _noise_per_pair(cfg)
    if context.mirrors(cfg):
        per_pair += (2 * 4 + 6 * 8) * cfg.window
    return (BASE.get(backend, BASE["numba"]) + corpus_bytes + params * (1 + _state_per_parameter(cfg)) + 8 * dense
            + rows * layers * width + cfg.pairs * per_pair + _members(cfg, cfg.population, backend))


def evaluation(cfg: Config, backend: str = "numba", streams: int = 256, block: int = 1 << 12) -> int:
    """Peak resident bytes of ``intlm eval`` (train.evaluate's defaults) of a model of ``cfg``: its
    parameters twice (as read, and the shapes they are checked against)."""
    from .model import state_shape

    rows, layers, width = state_shape(cfg, streams)
    return (BASE.get(backend, BASE["numba"]) + 2 * parameter_count(cfg) + rows * layers * width
            + streams * (block + 1) * 9 + _members(cfg, streams, backend))


def sampling(cfg: Config) -> int:
    """Peak resident bytes of ``intlm sample`` (the NumPy spec) from a model of ``cfg``."""
    return BASE["numpy"] + 2 * parameter_count(cfg) + _members(cfg, 1, "numpy")


def refuse(what: str, need: int, advice: str = "use smaller settings") -> None:
    """One IntlmError when ``need`` bytes do not fit in what is available."""
    have = available()
    if need > have:
        raise IntlmError(f"{what} needs about {_size(need)} of memory and this machine has {_size(have)} "
                         f"available: {advice}")


def _size(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.0f} MiB"
