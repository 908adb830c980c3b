"""A run's integer state and its checkpoint format, and the one place that decides whether a run
starts fresh, starts from another run's checkpoint (--init), or resumes.

A checkpoint holds everything integer that decides the next step: the parameters, the population's
recurrent state (STATE_ARRAY), the momentum (MOMENTUM_PREFIX + parameter name), the optimiser's own
state (optimizers.STATE_PREFIX + name; the optimiser is a config field), the anchor of
Anchored Weight Decay (ANCHOR_PREFIX + parameter name, when the config has it), and in its attrs
the config, the step, the corpus's fingerprint and the run's records (RECORDS: where it started
from, what it optimises). Nothing wall-clock goes in, so identical runs write identical bytes.
"""

import dataclasses
import hashlib
import re
import sys
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np

from . import checkpoint, context, optimizers
from .atomic import clean_stale
from .config import Config
from .errors import IntlmError
from .model import init_params, state_shape

CHECKPOINT_FORMAT = "intlm-checkpoint-1"
STATE_ARRAY = "hidden"  # the population's recurrent state (Run.recurrent; the key of the first format)
MOMENTUM_PREFIX = "momentum."  # int32 momentum arrays, when the config has momentum
ANCHOR_PREFIX = "anchor."  # the weights Anchored Weight Decay pulls toward, when the config has it
# attrs a run carries from checkpoint to checkpoint when it has them: "init" (the checkpoint it
# started from: path, content hash, step) and "objective" (evolve's objective and sampling settings)
RECORDS = ("init", "objective")
SHAPE_FIELDS = ("width", "layers", "mlp_ratio", "context_bits", "context_order", "context_logits")  # what a run started from a checkpoint keeps of it
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def data_fingerprint(data: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(data)).hexdigest()[:16]  # the bytes, not a copy of them


def corpus_meta(corpus) -> dict:
    """What a checkpoint records of the corpus it was trained on (the fingerprint guards resumes)."""
    return {"train_sha256_16": data_fingerprint(corpus.train), "train_bytes": int(len(corpus.train)),
            "val_bytes": int(len(corpus.val)),
            "source": str(Path(corpus.path).resolve()) if corpus.path else None}


class Run:
    """A training run's integer state: parameters, population state, momentum, optimiser state, step;
    the anchor (None unless cfg.anchor_decay) and the records (RECORDS) its checkpoints carry."""

    def __init__(self, cfg: Config, params, recurrent, momentum, step: int, optimizer_state=None, anchor=None,
                 records=None):
        self.cfg, self.params, self.recurrent, self.momentum, self.step = cfg, params, recurrent, momentum, step
        self.optimizer_state = {} if optimizer_state is None else optimizer_state
        self.anchor, self.records = anchor, dict(records or {})

    @classmethod
    def fresh(cls, cfg: Config, params=None, records=None):
        """Step 0 from ``params`` (copied; None: the config's initial weights), which are the anchor."""
        opt = optimizers.get(cfg.optimizer)
        params = init_params(cfg) if params is None else {k: v.copy() for k, v in params.items()}
        recurrent = np.zeros(state_shape(cfg, opt.state_rows(cfg)), dtype=np.int8)
        momentum, state = opt.init_state(cfg, params)
        anchor = {k: v.copy() for k, v in params.items()} if cfg.anchor_decay else None
        return cls(cfg, params, recurrent, momentum, 0, state, anchor, records)

    def arrays(self) -> dict:
        """Everything integer a checkpoint holds, by checkpoint array name."""
        arrays = dict(self.params)
        arrays[STATE_ARRAY] = self.recurrent
        arrays.update({MOMENTUM_PREFIX + k: v for k, v in self.momentum.items()})
        arrays.update({optimizers.STATE_PREFIX + k: v for k, v in self.optimizer_state.items()})
        arrays.update({ANCHOR_PREFIX + k: v for k, v in (self.anchor or {}).items()})
        return arrays

    def save(self, run_dir: Path, corpus_meta: dict) -> Path:
        """Nothing wall-clock goes in (the log holds the times), so identical runs write identical bytes."""
        arrays = self.arrays()
        attrs = {"format": CHECKPOINT_FORMAT, "config": self.cfg.to_json(), "step": self.step,
                 "cursor": {"step": self.step, "rows": self.cfg.pairs, "window": self.cfg.window},
                 "corpus": corpus_meta, **self.records}
        return checkpoint.save(run_dir, self.step, arrays, attrs)


def load_run(path, quiet=False) -> tuple:
    """(Run, attrs) from a checkpoint folder or a run folder (its newest intact checkpoint; unless
    ``quiet``, one line on stderr names the damaged ones passed over)."""
    run, ck = _load(path, quiet)
    return run, ck.attrs


def load_model(path, quiet=False) -> tuple:
    """(a Run of the parameters alone, attrs), for intlm eval and sample: the checkpoint's other arrays
    (the population's state, momentum, the optimiser's state, the anchor) are hashed as they are read
    and dropped, and nothing is made for them, so memory is the model's whatever population trained it."""
    ck, cfg = _checked(checkpoint.load(path, keep=_is_parameter), quiet)
    params = init_params(cfg)
    for name, want in params.items():
        got = ck.arrays.get(name)
        if got is None or got.shape != want.shape or got.dtype != want.dtype:
            raise IntlmError(f"checkpoint {ck.path} does not match its config: array {name!r}")
        params[name] = got
    return Run(cfg, params, None, {}, int(ck.attrs["step"])), ck.attrs


def _is_parameter(name: str) -> bool:
    return name != STATE_ARRAY and not name.startswith((MOMENTUM_PREFIX, optimizers.STATE_PREFIX, ANCHOR_PREFIX))


def _checked(ck, quiet) -> tuple:
    """(the checkpoint, its checked Config); unless ``quiet``, a line names the damaged ones passed over."""
    if ck.damaged and not quiet:
        more = f" (and {len(ck.damaged) - 1} more damaged)" if len(ck.damaged) > 1 else ""
        print(f"warning: passed over a damaged checkpoint ({ck.damaged[0]}){more}; using {ck.path}", file=sys.stderr)
    if ck.attrs.get("format") != CHECKPOINT_FORMAT or "config" not in ck.attrs:
        raise IntlmError(f"{ck.path} is not an intlm training checkpoint")
    try:
        return ck, Config.from_json(ck.attrs["config"]).check()
    except IntlmError as err:
        raise IntlmError(f"checkpoint {ck.path} holds a config intlm cannot use: {err}") from None


def _load(path, quiet) -> tuple:
    """load_run's (Run, checkpoint.Checkpoint)."""
    ck, cfg = _checked(checkpoint.load(path), quiet)
    fresh = Run.fresh(cfg)
    loaded = {}
    for name, want in fresh.arrays().items():
        got = ck.arrays.get(name)
        if got is None or got.shape != want.shape or got.dtype != want.dtype:
            raise IntlmError(f"checkpoint {ck.path} does not match its config: array {name!r}")
        loaded[name] = np.array(got)
    momentum = {name: loaded[MOMENTUM_PREFIX + name] for name in fresh.momentum}
    params = {name: loaded[name] for name in fresh.params}
    state = {name: loaded[optimizers.STATE_PREFIX + name] for name in fresh.optimizer_state}
    anchor = {name: loaded[ANCHOR_PREFIX + name] for name in fresh.anchor} if fresh.anchor else None
    init = ck.attrs.get("init")
    if init is not None and not (isinstance(init, dict) and isinstance(init.get("path"), str)
                                 and SHA256_HEX.fullmatch(str(init.get("content_hash")))
                                 and isinstance(init.get("step"), int)):
        raise IntlmError(f"checkpoint {ck.path} has a damaged record of the checkpoint it started from")
    records = {k: ck.attrs[k] for k in RECORDS if k in ck.attrs}
    return Run(cfg, params, loaded[STATE_ARRAY], momentum, int(ck.attrs["step"]), state, anchor, records), ck


def start_from(path, cfg: Config, typed=None, quiet=False) -> Run:
    """A new run (step 0, fresh optimiser state) from the weights of the checkpoint at ``path`` (a
    run folder: its newest intact one), recording that checkpoint's path and content hash. Its
    config: the checkpoint's model shape, and ``cfg``'s settings named in ``typed`` (None: all of
    them) over the checkpoint's others; a typed shape that differs is refused, except context tables
    added to a model without them (context.may_add)."""
    base, ck = _load(path, quiet)
    new = cfg if typed is None else _typed_over(base.cfg, cfg, typed)
    clash = [k for k in SHAPE_FIELDS if getattr(new, k) != getattr(base.cfg, k) and not context.may_add(base.cfg, k)]
    if clash:
        have = ", ".join(f"{k.replace('_', ' ')} {getattr(base.cfg, k)}" for k in clash)
        flags = ", ".join("--" + k.replace("_", "-") for k in clash)
        raise IntlmError(f"--init: the model of {ck.path} has {have}, which a run started from it keeps "
                         f"(leave {flags} out)")
    record = {"path": str(ck.path.resolve()), "content_hash": ck.content_hash, "step": ck.step}
    new = new.check()
    # a parameter the checkpoint lacks (tables added) starts as a new model's: zero, for a table
    return Run.fresh(new, {**init_params(new), **base.params}, {"init": record})



class Start(NamedTuple):
    run: Optional[Run]  # None when only peeking
    cfg: Config
    resumed: bool


def refuse_missing(run_dir, resume=False, resume_or_start=False):
    """--resume (without --resume-or-start) of a folder that holds no checkpoint is refused: a
    mistyped --out. train.pretrain asks this before it writes anything."""
    if resume and not resume_or_start and not _checkpoints(run_dir):
        raise IntlmError(f"--resume: {run_dir} holds no checkpoint (check --out, or pass "
                         f"--resume-or-start to start a fresh run there)")


def resume_or_fresh(run_dir, cfg: Config, resume=False, resume_or_start=False, typed=None, fingerprint=None,
                    peek=False, init=None, objective=None) -> Start:
    """Whether the run in ``run_dir`` starts fresh or resumes: the one place that decides, for the
    CLI and train.pretrain alike. Returns Start(run, cfg, resumed).

    A folder without checkpoints starts fresh (refused under ``resume`` alone, see refuse_missing):
    from the checkpoint ``init`` when given (start_from), which --resume cannot be asked with.
    A folder with checkpoints resumes its newest intact one when ``resume`` or ``resume_or_start``
    asks, and is refused otherwise. On resume, the Config fields named in ``typed`` (the settings
    the user typed; None: all) are ``cfg``'s and the others the checkpoint's; that config must be
    the checkpoint's, and ``fingerprint`` (when given) the fingerprint of its training corpus.
    ``objective``: the "objective" record of what the run optimises (evolve.py's; None: the corpus),
    which a fresh run records and a resumed one must have.

    ``peek`` (the CLI, before the run folder is locked): only the config the run will train with,
    as Start(None, cfg, resumed?), the checkpoint read quietly and nothing refused; train.pretrain
    decides again under the lock, where the run is loaded (every MPI process loads it).
    """
    asked = resume or resume_or_start
    if init is not None and asked:
        raise IntlmError("--init starts a new run and --resume continues one: pass one of them")
    found = _checkpoints(run_dir)
    if peek:
        if init is not None:
            return Start(None, start_from(init, cfg, typed, quiet=True).cfg, False)
        if not (asked and found):
            return Start(None, cfg, False)
        base = load_run(run_dir, quiet=True)[0].cfg
        return Start(None, cfg if typed is None else _typed_over(base, cfg, typed), True)
    if not found:
        refuse_missing(run_dir, resume, resume_or_start)
        run = Run.fresh(cfg) if init is None else start_from(init, cfg, typed)
        if objective is not None:
            run.records["objective"] = objective
        return Start(run, run.cfg, False)
    if not asked:
        raise IntlmError(f"{run_dir} already holds checkpoints: pass --resume to continue, or choose another --out")
    run, attrs = load_run(run_dir)
    if typed is not None:
        cfg = _typed_over(run.cfg, cfg, typed)
    if run.cfg.optimizer != cfg.optimizer:
        raise IntlmError(f"--resume: this run was trained with --optimizer {run.cfg.optimizer}, not "
                         f"{cfg.optimizer}; leave --optimizer out to continue it, or choose another --out")
    if run.cfg != cfg:
        diff = [k for k, v in dataclasses.asdict(cfg).items() if getattr(run.cfg, k) != v]
        raise IntlmError(f"--resume: settings differ from the checkpoint's ({', '.join(diff)}); "
                         f"leave them out to keep the checkpoint's")
    if fingerprint is not None and attrs["corpus"]["train_sha256_16"] != fingerprint:
        raise IntlmError("--resume: the corpus differs from the one this run was trained on")
    had = run.records.get("objective")
    if had != objective:
        if None in (had, objective):
            command = "intlm pretrain" if had is None else f"intlm evolve --objective {had['objective']}"
            raise IntlmError(f"--resume: {run_dir} was trained by {command}: continue it with that command")
        diff = [k for k in sorted(set(had) | set(objective)) if had.get(k) != objective.get(k)]
        raise IntlmError(f"--resume: the objective's settings differ from the run's ({', '.join(diff)}); "
                         f"leave them as they were")
    return Start(run, run.cfg, True)


def _checkpoints(run_dir) -> list:
    """The checkpoints of ``run_dir``, a checkpoint a dead process moved aside (``.step-*.old-PID``, the
    instant of a swap) put back first, as checkpoint.load does: the only one is then found too."""
    clean_stale(run_dir)
    return checkpoint.list_checkpoints(run_dir)


def _typed_over(base: Config, cfg: Config, typed) -> Config:
    """``base`` with the fields named in ``typed`` taken from ``cfg``."""
    return dataclasses.replace(base, **{k: getattr(cfg, k) for k in typed})
