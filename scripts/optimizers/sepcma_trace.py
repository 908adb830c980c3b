"""sep-CMA-ES's step sizes over a run: the global log2 step size, the spread of the per-weight ones,
the path's squared norm over n, the mean's drift and the full validation split's bits/byte, every
EVERY steps.

    python scripts/optimizers/sepcma_trace.py POPULATION STEPS EVERY [DAMPING]

Deterministic (the default corpus and settings, width 32 x 1, with --optimizer sepcma and
--sepcma-damping DAMPING, 1 unless given)."""
import sys
import numpy as np
from intlm import optimizers
from intlm.backends import get
from intlm.config import Config
from intlm.data import cache_dir_default, load_corpus
from intlm.optimizers import ranked, sepcma
from intlm.optimizers.units import MEAN_SHIFT
from intlm.run import Run
from intlm.train import evaluate


def main(population, steps, every, damping=1):
    corpus = load_corpus(None, cache_dir_default())
    backend = get("auto")
    cfg = Config(optimizer="sepcma", population=int(population), sepcma_damping=int(damping)).check()
    run, opt = Run.fresh(cfg), optimizers.get("sepcma")
    c = sepcma.constants(cfg)
    print(f"n {c.n}, mu {c.mu}, mu_eff {c.mu_eff}, c_sigma {c.c_sigma / 65536:.2e}, c_mu {c.c_mu / 65536:.2e}, "
          f"d_sigma {c.damping}")
    print("step | global log2 S (int8 units) | own log2 S: mean, std | |path|^2 / n | weights moved | rms drift of the mean (int8 units) | bits/byte")
    init = {k: v.copy() for k, v in ranked.by_parameter(run.optimizer_state, "mean.").items()}
    for s in range(1, int(steps) + 1):
        info = opt.step(run, corpus.train, backend)
        if s % int(every) == 0:
            own = np.concatenate([v.ravel() for v in ranked.by_parameter(run.optimizer_state, "log_scale.").values()]) / 65536
            path = np.concatenate([v.ravel() for v in ranked.by_parameter(run.optimizer_state, "path.").values()]).astype(np.int64)
            drift = np.concatenate([(m - init[k]).ravel() for k, m in ranked.by_parameter(run.optimizer_state, "mean.").items()])
            glob = int(run.optimizer_state["log_sigma"][0]) / 65536 - MEAN_SHIFT
            bpb = evaluate(run.params, cfg, corpus.val, backend)
            print(f"{s} | {glob:+.3f} | {own.mean():+.3f}, {own.std():.3f} | {(path ** 2).sum() / 65536 / c.n:.3f} | "
                  f"{info['moved']} | {np.sqrt((drift.astype(np.float64) ** 2).mean()) / 256:.2f} | {bpb:.3f}", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
