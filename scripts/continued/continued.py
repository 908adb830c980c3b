"""Runs continued from a checkpoint for a fixed number of steps and measured every few steps: what
the experiments of issue 16 share (forgetting.py, blackbox.py).

Everything is step-based: the base run trains a fixed number of steps, a continued run is trained
in segments of ``every`` steps (resuming, which is bit-exact) and measured at each segment's end.
So every figure is a function of the settings alone, whatever the machine's load; only the wall
times, reported beside the figures, depend on it.
"""

import math
import os
import shutil
import time
from pathlib import Path

from intlm import train
from intlm.config import Config
from intlm.data import cache_dir_default, load_corpus
from intlm.run import load_run

BASE_STEPS = 1000
BASE_POPULATION = 2048  # a quarter of the default: the base costs minutes, not ten
QUIET = dict(progress=False, eval_seconds=math.inf, save_seconds=math.inf)


def shakespeare_base(root: Path, steps: int = BASE_STEPS) -> tuple:
    """(run folder, wall seconds or None when reused): the default settings at population
    BASE_POPULATION trained from scratch on the default corpus for ``steps``; a folder that already
    holds them is reused."""
    run_dir = Path(root) / "shakespeare"
    if (run_dir / f"step-{steps:08d}").is_dir():
        return run_dir, None
    start = time.perf_counter()
    train.pretrain(load_corpus(None, cache_dir_default()), Config(population=BASE_POPULATION).check(), run_dir,
                   steps=steps, resume_or_start=True, **QUIET)
    return run_dir, time.perf_counter() - start


def measured_run(corpus, cfg: Config, run_dir: Path, init: Path, steps: int, every: int, measure,
                 task=None) -> tuple:
    """(points, wall seconds): a new run from ``init`` trained ``steps`` steps, ``measure(run)`` (a
    dict of figures) at step 0 and after every ``every`` steps; the seconds are training's alone.
    ``run_dir`` is started afresh."""
    shutil.rmtree(run_dir, ignore_errors=True)
    points = [{"step": 0, **measure(load_run(init)[0])}]
    seconds = 0.0
    for end in range(every, steps + 1, every):
        start = time.perf_counter()
        first = end == every
        run = train.pretrain(corpus, cfg, run_dir, steps=end, init=init if first else None, resume=not first,
                             task=task, **QUIET)
        seconds += time.perf_counter() - start
        points.append({"step": end, **measure(run)})
        print(f"  {run_dir.name} step {end}: " + ", ".join(f"{k} {v:.4f}" for k, v in points[-1].items()
                                                          if k != "step"), flush=True)
    return points, seconds


def wall_times(base_seconds, runs: dict) -> str:
    """One line: the machine, the base's wall time, each run's."""
    base = "reused" if base_seconds is None else f"{base_seconds:.0f} s"
    return f"wall time on {machine()}: base {base}; " + ", ".join(f"{k}: {v['seconds']:.0f} s" for k, v in runs.items())


def machine() -> str:
    """The CPU and the load it ran under, for the wall times."""
    name = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                "unknown CPU")
    return f"{name}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"
