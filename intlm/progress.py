"""What a person watching a run sees and what a benchmark times: the progress line on stderr and
the seconds of each phase of a step."""

import sys
import time


class Laps:
    """Seconds spent in each phase of a step, summed into ``totals`` (when given) by phase name."""

    def __init__(self, totals=None):
        self.totals, self.last = totals, time.perf_counter()

    def __call__(self, phase):
        if self.totals is not None:
            now = time.perf_counter()
            self.totals[phase] = self.totals.get(phase, 0.0) + now - self.last
            self.last = now


class Progress:
    """One status line on stderr: a bar, step, the step's figure (``figure``: training bits per byte,
    or an objective's mean score), validation bits per byte, tokens/s."""

    def __init__(self, total_steps, total_seconds, enabled=True, figure="train"):
        self.total_steps, self.total_seconds = total_steps, total_seconds
        self.enabled, self.figure = enabled, figure
        self.tty = sys.stderr.isatty()

    def sample(self, step, text):
        """A line of sampled text, above the status line on a terminal."""
        if self.enabled:
            sys.stderr.write(("\r\033[K" if self.tty else "") + f"sample at step {step}: {text}\n")
            sys.stderr.flush()

    def show(self, step, elapsed, value, val_bpb, tok_s, final=False, fresh_val=False):
        if not self.enabled or not (self.tty or final or fresh_val):
            return  # a log file gets a line per validation, not per step
        fracs = []
        if self.total_steps:
            fracs.append(step / self.total_steps)
        if self.total_seconds:
            fracs.append(elapsed / self.total_seconds)
        frac = min(1.0, max(fracs)) if fracs else 0.0
        bar = "#" * int(frac * 20) + "." * (20 - int(frac * 20))
        val = f"{val_bpb:.3f}" if val_bpb is not None else "-"
        line = (f"[{bar}] step {step} | {self.figure} {value:.3f} | val {val} bits/byte | "
                f"{tok_s / 1000:.0f}k tok/s | {int(elapsed) // 60}:{int(elapsed) % 60:02d}")
        if self.tty:
            sys.stderr.write("\r" + line + ("\n" if final else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()
