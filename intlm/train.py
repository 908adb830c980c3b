"""The training loop: stream windows, evaluate the population, shape fitness, update, checkpoint.

Everything that decides the trained bytes is a function of (config, corpus, step): the windows come
from the step number, the noise from the counter hash, so a resumed run repeats an uninterrupted one
bit for bit. Wall-clock time only decides *when* to log, checkpoint and stop.

The run's integer state, its checkpoint format and the fresh-or-resume decision are in run.py, the
progress line and phase timers in progress.py. ``evaluate`` stays here: it is the validation figure
the loop logs (and ``intlm eval`` prints), a loop over the backend's forward and nothing else.
What a step optimises is a task: CorpusFitness (pretraining) here, evolve.Objective for ``intlm
evolve``; both end in ``step.apply_fitness``, the one EGGROLL update (step.py: the step itself).
"""

import contextlib
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from . import checkpoint, compile_apart, memory, optimizers
from .arith import LL_ONE_BIT
from .atomic import clean_stale
from .backends import get as get_backend
from .config import Config
from .data import Corpus
from .errors import IntlmError, Stopped
from .lock import run_lock
from .model import state_shape
from .progress import Progress, compiling, header
from .run import Run, corpus_meta, refuse_missing, resume_or_fresh
from .runlog import open_log
from .sample import preview
from .signals import StopOnSignal
from .step import train_step

EVAL_BURN_IN = 64  # bytes each validation stream reads before it is scored
SAMPLE_BYTES = 100  # length of the text sample in the progress output


def evaluate(params, cfg: Config, data: np.ndarray, backend, streams: int = 256, max_bytes: int = 0,
             block: int = 1 << 12) -> float:
    """Validation bits/byte of the unperturbed model over ``data`` (or ``max_bytes`` of it, spread out).

    The text is cut into ``streams`` chunks scored in parallel; each stream first reads the
    EVAL_BURN_IN bytes before its chunk unscored, so chunk boundaries cost almost nothing. The
    streams advance ``block`` bytes per forward call, their state carried from call to call, each
    reading its bytes of ``data`` (an array, or a data.Split read from its store) a block at a time,
    so memory stays bounded on any corpus and the figure does not depend on ``block``.
    """
    n = len(data) - 1  # predictions
    streams = max(1, min(streams, n))
    chunk = n // streams if not max_bytes else max(1, min(n // streams, max_bytes // streams))
    starts = (np.arange(streams, dtype=np.int64) * n) // streams
    burn = np.minimum(starts, EVAL_BURN_IN)
    state = np.zeros(state_shape(cfg, streams), dtype=np.int8)
    total, scored_count = 0, 0
    for first in range(0, EVAL_BURN_IN + chunk, block):
        pos = np.arange(first, min(first + block, EVAL_BURN_IN + chunk))
        ll = backend.forward(params, cfg, _stream_bytes(data, starts - burn + first, len(pos) + 1), state)
        scored = (pos[None, :] >= burn[:, None]) & (pos[None, :] < burn[:, None] + chunk)
        total += int(ll[scored].sum(dtype=np.int64))
        scored_count += int(scored.sum())
    return float(-np.int64(total) / LL_ONE_BIT / scored_count)


def _stream_bytes(data, begins: np.ndarray, length: int) -> np.ndarray:
    """(len(begins), length) uint8: data[b:b + length] for each b of ``begins``, the data's last byte
    repeated past its end."""
    out = np.empty((len(begins), length), dtype=np.uint8)
    for row, b in zip(out, begins.tolist()):
        piece = data[b:b + length]
        row[:len(piece)] = piece
        if len(piece) < length:
            row[len(piece):] = data[len(data) - 1:]
    return out


class CorpusFitness:
    """What pretraining optimises: each member's log-likelihood of its window of the training split.
    A task (this, or evolve.Objective) is what ``pretrain`` runs a step of, and how it reports it."""

    figure = "train"  # the progress line's name for a step's figure
    record = None  # what checkpoints record of the task (run.RECORDS "objective"): nothing

    def __init__(self, corpus):
        self.corpus = corpus

    def describe(self) -> str:
        c = self.corpus
        return f"{c.path or 'the default corpus'}: {len(c.train)} train / {len(c.val)} validation bytes"

    def warm_up(self, run: Run, backend):
        """A step of a throwaway run: the kernels a step calls, compiled (see train.warm_up)."""
        self.step(run, backend)

    def step(self, run: Run, backend, world=None, control=0) -> dict:
        if world is None:
            return optimizers.get(run.cfg.optimizer).step(run, self.corpus.train, backend)
        return train_step(run, self.corpus.train, backend, world=world, control=control)  # eggroll alone

    def figures(self, cfg: Config, stats: dict) -> tuple:
        """(the step's log fields, its figure for the progress line, the member-bytes it read)."""
        tokens = optimizers.get(cfg.optimizer).member_bytes(cfg)
        bpb = -stats["fitness_sum"] / LL_ONE_BIT / tokens
        return {"train_bpb": round(bpb, 4)}, bpb, tokens


def pretrain(corpus, cfg: Config, run_dir, steps=None, minutes=None, backend="auto", resume=False,
             eval_seconds=30.0, save_seconds=60.0, eval_bytes=1 << 16, progress=True, resume_or_start=False,
             sample_seconds=0.0, world=None, init=None, task=None, keep_last=0) -> Run:
    """Train until ``steps`` or ``minutes`` (whichever first); checkpoints land in ``run_dir``; with
    ``progress``, a line of sampled text every ``sample_seconds`` (0: none).

    ``resume`` continues the newest intact checkpoint and refuses a folder without one, unless
    ``resume_or_start``; ``init`` (a checkpoint or run folder) starts a new run from its weights
    (run.start_from). One process at a time holds ``run_dir``. On SIGINT/SIGTERM the run saves
    after its current step and raises Stopped. ``world`` (distributed.World): this is one of
    several MPI processes training the run together; rank 0 alone holds the lock and writes.
    ``task``: what a step optimises, CorpusFitness(corpus) unless given (evolve.py gives its own);
    ``corpus``'s validation split is what the run is validated on either way. ``keep_last``: the
    newest checkpoints kept as new ones are saved (0: every one)."""
    run_dir = Path(run_dir)
    primary = world is None or world.primary
    meta = corpus_meta(corpus)
    task = task or CorpusFitness(corpus)
    with contextlib.ExitStack() as stack:
        err = None
        try:
            if world is not None:
                if cfg.optimizer != "eggroll":
                    raise IntlmError(f"--optimizer {cfg.optimizer} runs in one process: only eggroll runs under MPI")
                world.split(cfg)  # refuses a population too small for the processes, before any work
            checkpoint.refuse_inside(run_dir, f"--out {run_dir}")
            refuse_missing(run_dir, resume, resume_or_start)  # before anything is written
            if world is not None:
                world.use_device(backend)
            be = get_backend(backend)
            needs = memory.training(cfg, len(corpus.train) + len(corpus.val), be.name)
            memory.refuse("training", needs)
            run_dir.mkdir(parents=True, exist_ok=True)
            held = stack.enter_context(run_lock(run_dir)) if primary else None
            stop = stack.enter_context(StopOnSignal())
            if primary:
                clean_stale(run_dir)
            run, _, resumed = resume_or_fresh(run_dir, cfg, resume, resume_or_start, fingerprint=meta["train_sha256_16"],
                                              init=init, objective=task.record)
            if primary:
                log, clock = open_log(run_dir, run.step, resumed)
                stack.enter_context(log)
            else:
                log, clock = None, 0.0
        except IntlmError as e:
            if world is None:
                raise
            err = e
        if world is not None:
            world.agree(err)  # a process that could not start (rank 0's lock, say) stops them all
        if progress and primary:
            origin = run.records["init"]["path"] if "init" in run.records and not resumed else None
            print(header(run_dir, run.step, task, be, run.cfg, world, origin), file=sys.stderr)
        with compiling(progress and primary):
            # a child compiles where the compiler's memory would add to a peak above its own; none under MPI
            warm_up(task, run.cfg, corpus, be, apart=world is None and needs > compile_apart.COMPILING_BYTES)
        schedule = Schedule(steps, minutes, eval_seconds, save_seconds, eval_bytes, sample_seconds, keep_last)
        _loop(run, task, corpus, be, stop, world, schedule, Output(run_dir, meta, log, clock, held, progress and primary))
    return run


@dataclasses.dataclass(frozen=True)
class Schedule:
    """When a run stops (``steps``, ``minutes``: whichever first), validates on a sample of
    ``eval_bytes``, saves, shows a line of sampled text (0: never) and which checkpoints it keeps
    (the newest ``keep_last``; 0: all): the wall-clock decisions, none of which changes the bytes."""
    steps: int = None
    minutes: float = None
    eval_seconds: float = 30.0
    save_seconds: float = 60.0
    eval_bytes: int = 1 << 16
    sample_seconds: float = 0.0
    keep_last: int = 0


@dataclasses.dataclass(frozen=True)
class Output:
    """Where a run writes (rank 0's; the others' hold None): its folder, the corpus record its
    checkpoints carry, the open log and the training seconds of earlier invocations, the folder's
    lock (checked before every write), and whether the progress line is drawn."""
    run_dir: Path
    meta: dict
    log: object
    clock: float
    held: object
    progress: bool


def warm_up(task, cfg: Config, corpus, backend, apart=False):
    """Compile the kernels a run calls (or load them from Numba's cache) on a throwaway run of its
    config with a short window, before the run's clock starts: compiling is then neither training
    time (--minutes) nor in the rate. The population stays the run's: the backends choose their
    kernels by the number of rows.

    With ``apart`` (and Numba), what needs compiling is compiled in a child process (compile_apart),
    so the compiler's memory is not added to the run's."""
    small = dataclasses.replace(cfg, window=min(cfg.window, 8))

    def throwaway():
        run = Run.fresh(small)
        task.warm_up(run, backend)
        evaluate(run.params, small, corpus.val, backend, max_bytes=1)

    if apart and backend.name == "numba":
        compile_apart.warm_up(throwaway, f"{__name__}:warm_up_alone", json.dumps(cfg.to_json()))
    else:
        throwaway()


def warm_up_alone(config_json: str) -> None:
    """warm_up of the config ``config_json`` on a few bytes of its own, in this process: compile_apart's
    child."""
    cfg = Config.from_json(json.loads(config_json))
    text = np.frombuffer(b"\0" + bytes(range(32, 127)) * 8, np.uint8)  # a document of printable bytes
    corpus = Corpus(train=text, val=text.copy(), meta={})
    warm_up(CorpusFitness(corpus), cfg, corpus, get_backend("numba"))


def _loop(run, task, corpus, be, stop, world, schedule: Schedule, out: Output):
    """The steps, each logged before it may be saved (so a checkpoint's step is always in the log),
    then the final save, evaluation and record; a signal ends it with a save and Stopped.

    Under MPI (``world``) rank 0's clock decides saves and --minutes, a signal on any process stops
    all, and these decisions reach every process in the control word of the step's Allgatherv
    (distributed.control_word); rank 0 alone logs, evaluates and writes, after the state rows are
    gathered to it. ``out.held``: the run folder's lock, checked before every log write and save."""
    from . import distributed

    cfg, when = run.cfg, schedule
    primary = world is None or world.primary
    minutes = when.minutes
    bar = Progress(when.steps, minutes * 60 if minutes else None, out.progress, task.figure)
    start = time.perf_counter()
    last_eval = last_save = last_sample = start
    tokens_done, tokens, val_bpb, figure = 0, 0, None, 0.0
    time_up, all_signalled = False, False

    def total_seconds():  # training time over all sessions
        return out.clock + time.perf_counter() - start

    def write(record):
        out.held.check()
        out.log.write(json.dumps(record) + "\n")
        out.log.flush()

    saved = None  # (step, path) of this invocation's last save: saving that step again would read it back

    def save():
        nonlocal saved
        if saved and saved[0] == run.step:
            return saved[1]
        path = None
        if world is not None:
            world.guard(run.params, run.step)  # no checkpoint from processes that disagree
            world.gather_state(run.recurrent)
        if primary:
            out.held.check()
            path = run.save(out.run_dir, out.meta)
            checkpoint.prune(out.run_dir, when.keep_last)
        saved = run.step, path  # on every process, so that all skip the same collective saves
        return path

    while not time_up and (world is not None or stop.signum is None):
        now = time.perf_counter()
        elapsed = now - start
        if when.steps is not None and run.step >= when.steps:
            break
        if world is None and minutes is not None and elapsed >= minutes * 60:
            break
        if world is not None and stop.signum is not None and all_signalled:
            break  # every process has seen the signal in the last step's control word
        control = 0
        if world is not None:  # what this process asks of all after this step
            control = distributed.control_word(stop.signum, primary and now - last_save >= when.save_seconds,
                                               primary and minutes is not None and elapsed >= minutes * 60)
        stats = task.step(run, be, world, control)
        fields, figure, tokens = task.figures(cfg, stats)
        tokens_done += tokens
        now = time.perf_counter()
        if world is not None:
            signum, save_due, time_up = distributed.read_control(stats["control"])
            all_signalled = signum is not None
            if all_signalled and stop.signum is None:
                stop.signum = signum
            if run.step % distributed.GUARD_STEPS == 0 and not save_due:
                world.guard(run.params, run.step)
        else:
            save_due = now - last_save >= when.save_seconds
        if primary:
            record = {"step": run.step, "elapsed_s": round(total_seconds(), 3), **fields,
                      **{k: stats[k] for k in ("ties", "moved", "pulled", "decayed") if k in stats},
                      "tokens_per_s": round(tokens_done / max(now - start, 1e-9))}
            if tokens_done == tokens:  # an invocation's first record: what it trains with and on
                record.update(config=cfg.to_json(), backend=be.name)
            if now - last_eval >= when.eval_seconds:
                val_bpb = evaluate(run.params, cfg, corpus.val, be, max_bytes=when.eval_bytes)
                record["val_bpb_sample"] = round(val_bpb, 4)
                last_eval = time.perf_counter()
            write(record)
        if save_due:
            save()
            last_save = time.perf_counter()
        if out.progress and when.sample_seconds and now - last_sample >= when.sample_seconds:  # rank 0 only
            bar.sample(run.step, preview(run.params, cfg, SAMPLE_BYTES, seed=run.step))
            last_sample = time.perf_counter()
        if primary:
            bar.show(run.step, now - start, figure, val_bpb, tokens, fresh_val="val_bpb_sample" in record)
    path = save()
    if stop.signum is not None:
        raise Stopped(stop.signum, path)
    if not primary:
        return
    val_bpb = evaluate(run.params, cfg, corpus.val, be)
    elapsed = time.perf_counter() - start
    write({"step": run.step, "elapsed_s": round(total_seconds(), 3), "val_bpb": round(val_bpb, 4), "final": True})
    bar.show(run.step, elapsed, figure, val_bpb, tokens, final=True)
