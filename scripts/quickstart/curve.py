"""Validation curve of a run: every checkpoint's full-validation bits/byte against wall time.

    python scripts/quickstart/curve.py runs/shakespeare [CORPUS]

Prints one row per checkpoint (step, minutes of training when it was written, bits/byte) and the
unigram/bigram baselines of the same split. The minutes come from the run's log.jsonl.
"""

import json
import sys
from pathlib import Path

from intlm import checkpoint
from intlm.backends import get
from intlm.data import baselines, cache_dir_default, load_corpus
from intlm.run import load_run
from intlm.train import evaluate


def main(run_dir, corpus=None):
    run_dir = Path(run_dir)
    elapsed = {}
    for line in open(run_dir / "log.jsonl"):
        rec = json.loads(line)
        elapsed.setdefault(rec["step"], rec["elapsed_s"])
    data = None
    be = get("auto")
    print(f"{'step':>7} {'minutes':>8} {'val bits/byte':>14}")
    for path in checkpoint.list_checkpoints(run_dir):
        run, attrs = load_run(path)
        if data is None:
            data = load_corpus(corpus or attrs["corpus"]["source"], cache_dir_default())
        bpb = evaluate(run.params, run.cfg, data.val, be)
        print(f"{run.step:>7} {elapsed.get(run.step, float('nan')) / 60:>8.2f} {bpb:>14.4f}", flush=True)
    base = baselines(data.train, data.val)
    print(f"unigram {base['unigram']:.4f}  bigram {base['bigram']:.4f}")


if __name__ == "__main__":
    main(*sys.argv[1:])
