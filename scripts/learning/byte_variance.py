"""Where a byte's fitness difference comes from, at a trained checkpoint: the mean square of each
pair's per-byte difference ll+ - ll- (what reads and graded credit sum) with every tensor perturbed,
with only the context tables perturbed, and with only the dense tensors perturbed, for two steps' noise.

    python scripts/learning/byte_variance.py RUN_OR_CHECKPOINT

A table row's credit is the sum of these differences at the bytes it can change, so the dense
tensors' share is noise in every row's credit (and the tables' share noise in the dense tensors'
window sums). Floats only for the report.
"""

import sys

import numpy as np

from intlm import context
from intlm.backends import get
from intlm.data import cache_dir_default, load_corpus, stream_windows
from intlm.run import load_run


def zeroed(noise, keep):
    """The step's noise with every tensor outside ``keep`` zeroed."""
    return {k: v if k in keep else (tuple(np.zeros_like(a) for a in v) if isinstance(v, tuple) else np.zeros_like(v))
            for k, v in noise.items()}


def main(path):
    run, _ = load_run(path)
    cfg, backend = run.cfg, get("auto")
    corpus = load_corpus(None, cache_dir_default())
    for step in (run.step, run.step + 1):
        noise = backend.make_noise(cfg, step)
        tokens = stream_windows(corpus.train, cfg.pairs, step, cfg.window)
        sources = {"all": set(noise), "tables": {context.NAME}, "dense": set(noise) - {context.NAME}}
        d = {}
        for name, keep in sources.items():
            ll = backend.population_fitness(run.params, cfg, zeroed(noise, keep), tokens, run.recurrent.copy(),
                                            positions=True)
            d[name] = (ll[0::2].astype(np.int64) - ll[1::2]).astype(np.float64)
        full = np.mean(d["all"] ** 2)
        print(f"after {run.step} steps, noise of step {step}: mean (ll+ - ll-)^2 per byte {full:.0f}; "
              + "; ".join(f"{k} only {np.mean(v ** 2) / full:.3f} of it (correlation with all "
                          f"{np.corrcoef(v.ravel(), d['all'].ravel())[0, 1]:.3f})" for k, v in d.items() if k != "all"),
              flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
