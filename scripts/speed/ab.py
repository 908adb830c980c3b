"""A/B speed of the working tree's Numba backend against a git revision, in step with each other.

On a shared machine, two benchmark runs minutes apart differ by 10% or more, which hides the 1-5%
that one change to a kernel makes. This script runs each version in its own worker process (its own
package on the path and its own fresh Numba cache), and asks them in turn for a whole training step
and an unperturbed forward, round after round, so a slow spell of the machine slows both alike; it
prints medians of the ratios taken within each round, and checks that both compute the same bits.

    python scripts/speed/ab.py HEAD~1 --width 128 --rounds 60

Both versions must have ``intlm.bench.timers`` (train.train_step, backends.get, train.Run.fresh).
Each compiles its kernels afresh, which takes a minute or two before the rounds start.

Each version runs in a process of its own because two copies of the package in one process do not
run as they do alone: there, e3b797f's plain int8 tile ran at the speed of ac80f28's AVX2 tile (a
step 0.98 of its time), where as two programs the AVX2 tile's step takes about a fifth of it.
"""

import argparse
import hashlib
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[2]


def export(rev: str, into: pathlib.Path) -> pathlib.Path:
    """The package at ``rev`` as ``intlm`` under ``into`` (the folder to put on the path)."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "intlm"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def worker(cfg_args: dict):
    """One version (the ``intlm`` on this process's path): compile, then a round per line of input,
    each answered with the step's and the forward's seconds; at end of input, a digest of the
    parameters, the states and the last forward's log-likelihoods."""
    from intlm.backends import get
    from intlm.bench import timers
    from intlm.config import Config

    data = np.random.default_rng(0).integers(1, 256, 1 << 20, dtype=np.uint8)
    run, step, infer = timers(Config(**cfg_args).check(), get("numba"), data)
    step(), infer()
    print(json.dumps({"ready": True}), flush=True)
    ll = None
    for _ in sys.stdin:
        step_s = step()
        infer_s, ll = infer()
        print(json.dumps({"step": step_s, "infer": infer_s}), flush=True)
    digest = hashlib.sha256()
    for name in sorted(run.params):
        digest.update(np.ascontiguousarray(run.params[name]).tobytes())
    digest.update(np.ascontiguousarray(run.arrays()["hidden"]).tobytes())
    digest.update(np.ascontiguousarray(ll).tobytes())
    print(json.dumps({"digest": digest.hexdigest()}), flush=True)


class Version:
    """A worker process running one version of the package."""

    def __init__(self, path: pathlib.Path, cache: pathlib.Path, cfg_args: dict):
        env = {**os.environ, "PYTHONPATH": str(path), "NUMBA_CACHE_DIR": str(cache)}
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(cfg_args)], cwd=path,
                                     env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def answer(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"a worker stopped (exit {self.proc.wait()})")
        return json.loads(line)

    def round(self) -> tuple:
        self.proc.stdin.write("round\n")
        self.proc.stdin.flush()
        got = self.answer()
        return got["step"], got["infer"]

    def finish(self) -> str:
        self.proc.stdin.close()
        digest = self.answer()["digest"]
        self.proc.wait()
        return digest


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
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        (tmp / "rev").mkdir()
        versions = {"tree": Version(REPO, tmp / "cache-tree", cfg_args),
                    args.rev: Version(export(args.rev, tmp / "rev"), tmp / "cache-rev", cfg_args)}
        for v in versions.values():  # both compile at once (a minute or two), then wait for the rounds
            v.answer()
        times = {name: [] for name in versions}
        for i in range(args.rounds):
            for name in list(versions)[::1 if i % 2 else -1]:  # alternate which goes first
                times[name].append(versions[name].round())
        digests = [v.finish() for v in versions.values()]
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
    print(f"  parameters, states and inference log-likelihoods after {args.rounds + 1} steps: "
          f"{'identical' if digests[0] == digests[1] else 'DIFFERENT'}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker(json.loads(sys.argv[2]))
    else:
        main()
