"""The peak resident memory of each phase of a training step (train.train_step's laps: data, noise,
reads, forward, fitness, sums, update), the peak reset between phases (/proc/self/clear_refs), for
the default model or the settings given, on the default corpus with Numba:

    python scripts/memory/step_phases.py --steps 4 context_order=4

Prints per step the seconds and, per phase, RSS at its end / its peak, in MiB. Linux only. Run it
once first if Numba has not compiled these kernels: its first step holds the compiler's memory."""

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from intlm import step
from intlm.backends import get
from intlm.config import PRETRAIN_CONTEXT, Config
from intlm.data import cache_dir_default, load_corpus
from intlm.run import Run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "learning"))
from study import parse_changes  # noqa: E402  (FIELD=VALUE, typed like the field's default)


def mib() -> tuple:
    text = open("/proc/self/status").read()
    return int(text.split("VmRSS:")[1].split()[0]) >> 10, int(text.split("VmHWM:")[1].split()[0]) >> 10


def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


class PhasePeaks:
    """Stands in for progress.Laps: at each phase's end, its RSS and peak; the peak then starts again."""

    def __init__(self, timings=None):
        self.seen = []
        reset_peak()

    def __call__(self, phase):
        self.seen.append((phase, *mib()))
        reset_peak()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("settings", nargs="*", help="Config fields, FIELD=VALUE")
    args = parser.parse_args()
    cfg = dataclasses.replace(Config(), **{**PRETRAIN_CONTEXT, **parse_changes(args.settings)}).check()
    corpus = load_corpus(None, cache_dir_default())
    backend, run = get("numba"), Run.fresh(cfg)
    print(f"after the run's arrays: RSS {mib()[0]} MiB")
    for i in range(args.steps):
        peaks = PhasePeaks()
        step.Laps = lambda timings, peaks=peaks: peaks  # train_step's only use of Laps
        began = time.perf_counter()
        step.train_step(run, corpus.train, backend)
        print(f"step {i} {time.perf_counter() - began:.1f} s  " + "  ".join(f"{p} {r}/{h}" for p, r, h in peaks.seen))


if __name__ == "__main__":
    main()
