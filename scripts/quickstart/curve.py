"""Validation curve of a run: every checkpoint's full-validation bits/byte against wall time.

    python scripts/quickstart/curve.py runs/shakespeare [CORPUS] [--at 1,10,30,60]

Prints one row per checkpoint (step, minutes of training when it was written, bits/byte) and the
unigram/bigram baselines of the same split. The minutes come from the run's log.jsonl. With --at,
only the checkpoint nearest each of those minutes (a full evaluation takes a while on 2 cores).
"""

import argparse
import json
from pathlib import Path

from intlm import checkpoint
from intlm.backends import get
from intlm.data import baselines, cache_dir_default, load_corpus
from intlm.run import load_run
from intlm.train import evaluate


def nearest(paths, minutes, marks):
    """The paths whose minutes are nearest each mark, in their order, once each."""
    chosen = {min(range(len(paths)), key=lambda i: abs(minutes[i] - mark)) for mark in marks}
    return [paths[i] for i in sorted(chosen)]


def main(run_dir, corpus=None, at=None):
    run_dir = Path(run_dir)
    elapsed = {}
    for line in open(run_dir / "log.jsonl"):
        rec = json.loads(line)
        elapsed.setdefault(rec["step"], rec["elapsed_s"])
    data = None
    be = get("auto")
    print(f"{'step':>7} {'minutes':>8} {'val bits/byte':>14}")
    paths = checkpoint.list_checkpoints(run_dir)
    if at:
        paths = nearest(paths, [elapsed.get(checkpoint.step_of(p), float("inf")) / 60 for p in paths], at)
    for path in paths:
        run, attrs = load_run(path)
        if data is None:
            data = load_corpus(corpus or attrs["corpus"]["source"], cache_dir_default())
        bpb = evaluate(run.params, run.cfg, data.val, be)
        print(f"{run.step:>7} {elapsed.get(run.step, float('nan')) / 60:>8.2f} {bpb:>14.4f}", flush=True)
    base = baselines(data.train, data.val)
    print(f"unigram {base['unigram']:.4f}  bigram {base['bigram']:.4f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("corpus", nargs="?", default=None)
    ap.add_argument("--at", default=None, help="minutes, comma-separated: the checkpoints nearest them only")
    args = ap.parse_args()
    main(args.run_dir, args.corpus, [float(m) for m in args.at.split(",")] if args.at else None)
