"""A run's integer state and its checkpoint format.

A checkpoint holds everything integer that decides the next step: the parameters, the population's
recurrent state (STATE_ARRAY), the momentum (MOMENTUM_PREFIX + parameter name), and in its attrs
the config, the step and the corpus's fingerprint. Nothing wall-clock goes in, so identical runs
write identical bytes.
"""

import hashlib
import sys
from pathlib import Path

import numpy as np

from . import checkpoint, es
from .config import Config
from .errors import IntlmError
from .model import init_params

CHECKPOINT_FORMAT = "intlm-checkpoint-1"
STATE_ARRAY = "hidden"  # the population's recurrent state, carried across steps
MOMENTUM_PREFIX = "momentum."  # int32 momentum arrays, when the config has momentum


def data_fingerprint(data: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest()[:16]


def corpus_meta(corpus) -> dict:
    """What a checkpoint records of the corpus it was trained on (the fingerprint guards resumes)."""
    return {"train_sha256_16": data_fingerprint(corpus.train), "train_bytes": int(len(corpus.train)),
            "val_bytes": int(len(corpus.val)),
            "source": str(Path(corpus.path).resolve()) if corpus.path else None}


class Run:
    """A training run's integer state: parameters, population state, momentum, step."""

    def __init__(self, cfg: Config, params, hidden, momentum, step: int):
        self.cfg, self.params, self.hidden, self.momentum, self.step = cfg, params, hidden, momentum, step

    @classmethod
    def fresh(cls, cfg: Config):
        hidden = np.zeros((cfg.population, cfg.layers, cfg.width), dtype=np.int8)
        params = init_params(cfg)
        return cls(cfg, params, hidden, es.init_momentum(cfg, params), 0)

    def arrays(self) -> dict:
        """Everything integer a checkpoint holds, by checkpoint array name."""
        arrays = dict(self.params)
        arrays[STATE_ARRAY] = self.hidden
        arrays.update({MOMENTUM_PREFIX + k: v for k, v in self.momentum.items()})
        return arrays

    def save(self, run_dir: Path, corpus_meta: dict) -> Path:
        """Nothing wall-clock goes in (the log holds the times), so identical runs write identical bytes."""
        arrays = self.arrays()
        attrs = {"format": CHECKPOINT_FORMAT, "config": self.cfg.to_json(), "step": self.step,
                 "cursor": {"step": self.step, "rows": self.cfg.pairs, "window": self.cfg.window},
                 "corpus": corpus_meta}
        return checkpoint.save(run_dir, self.step, arrays, attrs)


def load_run(path, quiet=False) -> tuple:
    """(Run, attrs) from a checkpoint folder or a run folder (its newest intact checkpoint; unless
    ``quiet``, one line on stderr names the damaged ones passed over)."""
    ck = checkpoint.load(path)
    if ck.damaged and not quiet:
        more = f" (and {len(ck.damaged) - 1} more damaged)" if len(ck.damaged) > 1 else ""
        print(f"warning: passed over a damaged checkpoint ({ck.damaged[0]}){more}; using {ck.path}", file=sys.stderr)
    if ck.attrs.get("format") != CHECKPOINT_FORMAT or "config" not in ck.attrs:
        raise IntlmError(f"{ck.path} is not an intlm training checkpoint")
    cfg = Config.from_json(ck.attrs["config"]).check()
    fresh = Run.fresh(cfg)
    loaded = {}
    for name, want in fresh.arrays().items():
        got = ck.arrays.get(name)
        if got is None or got.shape != want.shape or got.dtype != want.dtype:
            raise IntlmError(f"checkpoint {ck.path} does not match its config: array {name!r}")
        loaded[name] = np.array(got)
    momentum = {name: loaded[MOMENTUM_PREFIX + name] for name in fresh.momentum}
    params = {name: loaded[name] for name in fresh.params}
    return Run(cfg, params, loaded[STATE_ARRAY], momentum, int(ck.attrs["step"])), ck.attrs
