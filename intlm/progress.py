"""What a person watching a run sees and what a benchmark times: the run's header, the
"compiling kernels" line and the progress line on stderr, and the seconds of each phase of a step.

On a terminal the progress line is tqdm's, redrawn in place and cut to the terminal's width: the
bar goes first, then the rate, the times, the validation figure, so that what is left always fits
one line (a line that wraps leaves a new line behind at every redraw). Anywhere else (a file, a
pipe, CI) it is a plain line at each validation and at the end, with every field.
"""

import math
import os
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

SMOOTHING_S = 10.0  # the rate and the ETA follow about the last 10 seconds of steps
REFRESH_S = 0.5  # the terminal line is redrawn at most this often (and at the end)
MIN_BAR = 8  # a bar narrower than this is left out
DROP_ORDER = ("rate", "time", "val", "figure")  # what goes, in turn, when the line is too wide


class Laps:
    """Seconds spent in each phase of a step, summed into ``totals`` (when given) by phase name."""

    def __init__(self, totals=None):
        self.totals, self.last = totals, time.perf_counter()

    def __call__(self, phase):
        if self.totals is not None:
            now = time.perf_counter()
            self.totals[phase] = self.totals.get(phase, 0.0) + now - self.last
            self.last = now


def terminal_columns(stream) -> int:
    """The width of the terminal ``stream`` writes to (80 when it cannot be asked)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return shutil.get_terminal_size().columns


def clock(seconds) -> str:
    """m:ss or h:mm:ss."""
    return tqdm.format_interval(max(0, int(seconds)))


class Progress:
    """The status of a run: step, the step's figure (``figure``: training bits per byte, or an
    objective's mean score), validation bits per byte, a smoothed tokens/s, elapsed time and the time
    left of --steps / --minutes (``total_steps`` / ``total_seconds``, None: no limit).

    ``elapsed`` is this invocation's training time: the loop starts its clock after the kernels are
    compiled (see compiling), so neither the time left nor the rate counts compilation. ``stream``
    (stderr) and ``columns`` (a function giving the terminal's width) are for tests."""

    def __init__(self, total_steps, total_seconds, enabled=True, figure="train", stream=None, columns=None):
        self.total_steps, self.total_seconds = total_steps, total_seconds
        self.enabled, self.figure = enabled, figure
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.columns = columns or (lambda: terminal_columns(self.stream))
        self.bar = None  # the tqdm line, from the first step on a terminal
        self.step_s = None  # seconds per step, smoothed over SMOOTHING_S
        self.last = None  # (step, elapsed) of the previous show
        self.drawn = 0.0  # when the terminal line was last drawn

    def sample(self, step, text):
        """A line of sampled text, above the status line on a terminal."""
        if self.enabled:
            line = f"sample at step {step}: {text}"
            if self.bar is not None:
                self.bar.write(line, file=self.stream)
            else:
                self.stream.write(line + "\n")
                self.stream.flush()

    def show(self, step, elapsed, value, val_bpb, tokens_per_step, final=False, fresh_val=False):
        """The status after ``step`` (``elapsed`` seconds into the run, ``tokens_per_step`` tokens a
        step): redrawn on a terminal, a line elsewhere at each fresh validation and at the end."""
        self._smooth(step, elapsed)
        if not self.enabled:
            return
        rate = tokens_per_step / self.step_s if self.step_s else None
        fields = self.fields(step, elapsed, value, val_bpb, rate, final)
        if not self.tty:
            if final or fresh_val:
                self.stream.write("  ".join(fields.values()) + "\n")
                self.stream.flush()
            return
        now = time.perf_counter()
        if not final and self.bar is not None and now - self.drawn < REFRESH_S:
            return
        width = max(1, self.columns() - 1)  # the last column left free: some terminals wrap on it
        text, with_bar = fit(fields, width)
        bar_format = text + (" |{bar}|" if with_bar else "")
        if self.bar is None:
            self.bar = tqdm(total=1000, file=self.stream, ncols=width, bar_format=bar_format, leave=True)
        self.bar.ncols, self.bar.bar_format, self.bar.n = width, bar_format, 1000 * self.fraction(step, elapsed)
        self.bar.refresh()
        self.drawn = now
        if final:
            self.bar.close()
            self.bar = None

    def _smooth(self, step, elapsed):
        if self.last is not None and step > self.last[0] and elapsed > self.last[1]:
            dt = elapsed - self.last[1]
            per_step = dt / (step - self.last[0])
            weight = 1 - math.exp(-dt / SMOOTHING_S)
            self.step_s = per_step if self.step_s is None else self.step_s + weight * (per_step - self.step_s)
        self.last = (step, elapsed)

    def fraction(self, step, elapsed) -> float:
        """How much of --steps / --minutes is done (the larger; 0 without either)."""
        done = [0.0]
        if self.total_steps:
            done.append(step / self.total_steps)
        if self.total_seconds:
            done.append(elapsed / self.total_seconds)
        return min(1.0, max(done))

    def seconds_left(self, step, elapsed):
        """Until --steps or --minutes ends the run, whichever comes first (None: unknown)."""
        left = []
        if self.total_seconds:
            left.append(self.total_seconds - elapsed)
        if self.total_steps and self.step_s:
            left.append((self.total_steps - step) * self.step_s)
        return max(0.0, min(left)) if left else None

    def fields(self, step, elapsed, value, val_bpb, rate, final=False) -> dict:
        """The status's fields by name, in display order (at the end, no time left)."""
        left = None if final else self.seconds_left(step, elapsed)
        return {
            "step": f"step {step}",
            "figure": f"{self.figure} {value:.3f}",
            "val": f"val {val_bpb:.3f}" if val_bpb is not None else "val -",
            "rate": f"{tqdm.format_sizeof(rate)} tok/s" if rate else "- tok/s",
            "time": clock(elapsed) + (f"<{clock(left)}" if left is not None else ""),
        }


def fit(fields: dict, width: int) -> tuple:
    """(the fields that fit ``width`` joined, whether a bar of at least MIN_BAR fits beside them),
    dropping fields in DROP_ORDER until they fit, down to the step's number."""
    fields = dict(fields)
    for name in (None,) + DROP_ORDER:
        fields.pop(name, None)
        text = "  ".join(fields.values())
        if len(text) + 3 + MIN_BAR <= width:
            return text, True
        if len(text) <= width:
            return text, False
    return text.split()[-1][:width], False  # the step's number alone


def header(run_dir, step, task, backend, cfg, world=None, origin=None) -> str:
    """A few short lines saying what is about to train: the model and its parameters, the population,
    the corpus, the backend and its threads (the full config goes into the run's log.jsonl)."""
    from . import context
    from .config import parameter_count

    layers = f"{cfg.layers} layer" + ("s" if cfg.layers > 1 else "")
    tables = context.describe(cfg)
    tables = tables and ", " + tables
    procs = f" x {world.size} MPI processes" if world is not None else ""
    return "\n".join([
        f"training {run_dir} from step {step}" + (f" of {origin}" if origin else ""),
        f"  model       {cfg.width} wide x {layers}{tables}; {tqdm.format_sizeof(parameter_count(cfg))} parameters",
        f"  population  {cfg.population} ({cfg.optimizer}, rank {cfg.rank}), {cfg.window} bytes per member a step",
        f"  corpus      {task.describe()}",
        f"  backend     {backend.name}, {threads(backend)}{procs}",
        f"  figures     {task.figure} and val in bits/byte; full config in {Path(run_dir) / 'log.jsonl'}",
    ])


def threads(backend) -> str:
    """How many threads a backend computes on, and how to change it."""
    if backend.name == "numba":
        import numba

        return f"{numba.get_num_threads()} threads (NUMBA_NUM_THREADS)"
    return "GPU" if backend.name == "cupy" else "1 thread"


@contextmanager
def compiling(enabled=True, stream=None):
    """Around a run's warm-up: when Numba compiles (once per machine and intlm version; later runs
    load its cache), a line says so as it starts, and another how long it took. Numba's compile
    events say when: loading the cache is none."""
    if not enabled or "numba" not in sys.modules:  # the numpy backend never imports Numba
        yield
        return
    from numba.core import event

    stream = stream or sys.stderr
    began = []

    class Notice(event.Listener):
        def on_start(self, ev):
            if not began:
                began.append(time.perf_counter())
                stream.write("compiling kernels (first run only; not counted in --minutes) ...\n")
                stream.flush()

        def on_end(self, ev):
            pass

    with event.install_listener("numba:compile", Notice()):
        yield
    if began:
        stream.write(f"kernels compiled in {clock(time.perf_counter() - began[0])}\n")
        stream.flush()
