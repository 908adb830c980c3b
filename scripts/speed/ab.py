"""A/B speed of the working tree's Numba backend against a git revision, in one process.

On a shared machine, two benchmark runs minutes apart differ by 10% or more, which hides the 1-5%
that one change to a kernel makes. This script imports both versions side by side (the revision's
package is exported under another name), runs whole training steps and unperturbed forwards of each
alternately, and prints medians of ratios taken within each round, so a slow spell of the machine
slows both versions alike. It also checks that both versions compute the same bits.

    python scripts/speed/ab.py HEAD~1 --width 128 --rounds 60

Both versions must share the backend interface (train.train_step, backends.get, train.Run.fresh). Numba
compiles both afresh into a temporary cache (its on-disk cache would not see an edit to
backends/numba/gemm.py alone, see that module), which takes a minute before the rounds start.
"""

import argparse
import importlib
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[2]


def export(rev: str, into: pathlib.Path) -> str:
    """The package at ``rev`` as the importable package ``intlm_rev`` under ``into``."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "intlm"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    (into / "intlm").rename(into / "intlm_rev")
    return "intlm_rev"


def version(package: str, cfg_args: dict, data):
    """A version's run and its step and inference timers (intlm.bench.timers on its own modules)."""
    from intlm.bench import timers

    config = importlib.import_module(package + ".config")
    backend = importlib.import_module(package + ".backends").get("numba")
    return timers(config.Config(**cfg_args).check(), backend, data, importlib.import_module(package + ".train"))


def spread(values) -> str:
    return f"{np.median(values):.3f} (middle half {np.percentile(values, 25):.3f}-{np.percentile(values, 75):.3f})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rev", help="git revision to compare the working tree against")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--population", type=int, default=512)
    parser.add_argument("--rank", type=int, default=1)
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--context-bits", type=int, default=0, help="context tables (0: none; a revision before "
                        "c7eae7c has none to compare)")
    parser.add_argument("--context-order", type=int, default=2)
    parser.add_argument("--context-logits", type=int, default=0, help="1: rows into the logits too (a revision "
                        "before e9d94f3 has none)")
    parser.add_argument("--context-credit", default="window", help="reads: the tables' reads credit (a revision "
                        "before 34b91b4 has only window)")
    args = parser.parse_args()
    cfg_args = dict(width=args.width, layers=args.layers, population=args.population, rank=args.rank,
                    window=args.window)
    if args.context_bits:
        cfg_args.update(context_bits=args.context_bits, context_order=args.context_order)
        cfg_args.update({k: v for k, v in (("context_logits", args.context_logits),
                                           ("context_credit", args.context_credit)) if v not in (0, "window")})
    data = np.random.default_rng(0).integers(1, 256, 1 << 20, dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["NUMBA_CACHE_DIR"] = os.path.join(tmp, "numba-cache")  # before numba is imported
        sys.path.insert(0, tmp)
        sys.path.insert(0, str(REPO))
        versions = {"tree": version("intlm", cfg_args, data), args.rev: version(export(args.rev, pathlib.Path(tmp)),
                                                                                cfg_args, data)}
        times = {name: [] for name in versions}
        last = {}  # each version's latest inference log-likelihoods
        for name, (_, step, infer) in versions.items():  # compile
            step(), infer()
        for i in range(args.rounds):
            for name in list(versions)[::1 if i % 2 else -1]:  # alternate which goes first
                _, step, infer = versions[name]
                step_s = step()
                infer_s, last[name] = infer()
                times[name].append((step_s, infer_s))
    (a, b), tokens = (np.array(times[name]) for name in versions), args.population * args.window
    print(f"width {args.width} x {args.layers}, population {args.population}, rank {args.rank}, "
          f"window {args.window}, "
          + (f"context tables 2^{args.context_bits} rows, orders 2..{args.context_order}"
             f"{', logits' if args.context_logits else ''}, {args.context_credit} credit, " if args.context_bits else "")
          + f"{args.rounds} rounds")
    for name, t in zip(versions, (a, b)):
        print(f"  {name:>12}: training {tokens / np.median(t[:, 0]):>10,.0f} tok/s, inference "
              f"{tokens / np.median(t[:, 1]):>10,.0f} tok/s, ratio {spread(t[:, 1] / t[:, 0])}")
    print(f"  time, tree / {args.rev}: training step {spread(a[:, 0] / b[:, 0])}, inference {spread(a[:, 1] / b[:, 1])}")
    (run_a, _, _), (run_b, _, _) = versions.values()
    same = (all(np.array_equal(run_a.params[k], run_b.params[k]) for k in run_a.params)
            and np.array_equal(run_a.arrays()["hidden"], run_b.arrays()["hidden"]) and np.array_equal(*last.values()))
    print(f"  parameters, states and inference log-likelihoods after {args.rounds + 1} steps: "
          f"{'identical' if same else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
