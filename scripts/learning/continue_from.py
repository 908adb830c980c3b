"""Where a run's curve has flattened, which update setting holds it there: continue one checkpoint
with some of the update's settings changed and evaluate the whole validation split at marks of steps.

    python scripts/learning/continue_from.py RUN_OR_CHECKPOINT NAME --steps 100,250 [FIELD=VALUE ...] [--record FILE]

FIELD=VALUE changes settings that the checkpoint's arrays do not fix (alpha_q16, alpha_halflife,
momentum_shift, sigma_shift, fitness, context_credit, population, window, ...); the step counter,
momentum and population state carry on from the checkpoint, so a change of step size acts from the
next step on (a new population's members start from a reset state).
Training is deterministic, so each variant is compared with the unchanged continuation at the same
steps (or, with another population or window, at the same member-bytes), on any machine. One JSON record per command is
appended to FILE (default scripts/learning/records-local/continue.jsonl).
"""

import argparse
import dataclasses
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from intlm import optimizers
from intlm.backends import get
from intlm.data import cache_dir_default, load_corpus
from intlm.es import momentum_dtype
from intlm.model import state_shape
from intlm.run import SHAPE_FIELDS, load_run
from intlm.train import evaluate

from study import LOCAL_RECORD, append_record, cpu_name, parse_changes


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("path")
    ap.add_argument("name")
    ap.add_argument("changes", nargs="*", help="FIELD=VALUE changes to the checkpoint's config")
    ap.add_argument("--steps", required=True, help="steps after the checkpoint at which to evaluate")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--record", type=Path, default=LOCAL_RECORD.with_name("continue.jsonl"))
    args = ap.parse_args()
    run, _ = load_run(args.path)
    changes = parse_changes(args.changes)
    fixed = sorted(set(changes) & set(SHAPE_FIELDS + ("optimizer", "anchor_decay")))  # the optimiser's state, the anchor
    if fixed:
        sys.exit(f"error: {', '.join(fixed)} fixed by the checkpoint's arrays")
    run.cfg = dataclasses.replace(run.cfg, **changes).check()
    if run.cfg.population != run.recurrent.shape[0]:  # the new members' streams start from a reset state
        run.recurrent = np.zeros(state_shape(run.cfg, run.cfg.population), np.int8)
    run.momentum = {k: m.astype(momentum_dtype(run.cfg), copy=False) for k, m in run.momentum.items()}  # int64 past its int32 bound
    corpus = load_corpus(None, cache_dir_default())
    backend = get(args.backend)
    opt = optimizers.get(run.cfg.optimizer)
    start, points, t0 = run.step, [], time.perf_counter()
    for mark in sorted(int(s) for s in args.steps.split(",")):
        while run.step < start + mark:
            opt.step(run, corpus.train, backend)
        bpb = evaluate(run.params, run.cfg, corpus.val, backend)
        points.append({"steps": mark, "step": run.step, "val_bpb": round(bpb, 4)})
        print(f"{args.name}: +{mark} steps (step {run.step}), validation {bpb:.4f} bits/byte, "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
    record = {"name": args.name, "command": "python scripts/learning/continue_from.py " + shlex.join(sys.argv[1:]),
              "from_step": start, "changes": changes, "config": run.cfg.to_json(), "cpu": cpu_name(),
              "date": time.strftime("%Y-%m-%d %H:%M"), "points": points}
    append_record(args.record, record)


if __name__ == "__main__":
    main()
