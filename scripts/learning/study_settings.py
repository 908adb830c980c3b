"""Learning-speed study: validation bits/byte after a fixed number of training tokens, per setting.

    python scripts/learning/study_settings.py MILLION_TOKENS '{"width": 32}' '{"width": 32, "fitness": "sign"}' ...

Each JSON object changes the default Config. Every run trains from scratch on the default corpus
for MILLION_TOKENS million member-bytes and prints the validation bits/byte (a fixed 64 KiB sample
of the validation split) at 1/4, 2/4, 3/4 and all of the budget, plus its wall time. Budgets are in
tokens, not seconds, so a busy machine changes the time column but not the curve; compare
tokens/s separately.
"""

import json
import sys
import time

from intlm.backends import get
from intlm.config import Config
from intlm.data import cache_dir_default, load_corpus
from intlm.run import Run
from intlm.train import evaluate, train_step


def main(budget_million, *specs):
    corpus = load_corpus(None, cache_dir_default())
    backend = get("auto")
    for spec in specs or ("{}",):
        cfg = Config(**json.loads(spec)).check()
        run = Run.fresh(cfg)
        per_step = cfg.population * cfg.window
        total = int(float(budget_million) * 1e6 / per_step)
        marks = {int(total * q) for q in (0.25, 0.5, 0.75, 1.0)}
        start, curve = time.time(), []
        while run.step < total:
            train_step(run, corpus.train, backend)
            if run.step in marks:
                bpb = evaluate(run.params, cfg, corpus.val, backend, max_bytes=1 << 16)
                curve.append(f"{run.step * per_step / 1e6:.1f}M:{bpb:.3f}")
        print(f"{spec}  {time.time() - start:.0f}s  " + "  ".join(curve), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
