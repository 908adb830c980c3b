"""Throughput benchmark: training vs inference tokens/s, multiply-adds/s, phase shares, peak memory.

A token is one member reading one byte. Training tokens/s counts whole steps (data, noise, the
population's forward, fitness shaping, update); inference tokens/s is the unperturbed model on the
same batch (population rows x window bytes). The two are timed alternately in one process and the
ratio is the median of each step's ratio to the inference pass beside it, so it stays fair on a busy
machine. Each setting runs in fresh processes (run_one), so its peak resident memory is its own,
and the ratio reported is the median over them.

``machine_limit`` measures what this machine's cores do on a bare int8 matrix product: the
backend's own tile kernel, a plain Numba int8 dot (what LLVM makes of a straightforward loop), and
float32 BLAS for comparison. Figures are medians over ``repeats``.
"""

import json
import resource
import subprocess
import sys
import time

import numpy as np
from numba import njit, prange
from tqdm import tqdm

from . import context
from .backends.numba import gemm as cpu_gemm
from .config import PRETRAIN_CONTEXT, Config
from .model import VOCAB

PHASES = ("data", "noise", "reads", "forward", "fitness", "sums", "update")  # train.train_step's laps
# The grid `intlm bench` runs when no setting is given: width, layers, population and rank scaling
# around the official implementation's benchmark sizes (width 128 x 1 and 256 x 2, population 512).
DEFAULT_GRID = (
    [dict(width=w, layers=1, population=512) for w in (64, 128, 256)]
    + [dict(width=128, layers=L, population=512) for L in (2, 4)]
    + [dict(width=256, layers=2, population=512)]
    + [dict(width=128, layers=1, population=p) for p in (256, 2048, 8192)]
    + [dict(width=128, layers=1, population=512, rank=4)]
    + [dict(width=256, layers=2, population=4096)]
    # the model `intlm pretrain` trains by default (its context tables), and without tables
    + [dict(width=32, layers=1, population=8192, **PRETRAIN_CONTEXT), dict(width=32, layers=1, population=8192)]
)


def macs_per_token(cfg: Config) -> int:
    """Multiply-adds of the shared matrix products for one member and one byte (the GRU's four
    d x d matrices, the MLP and the head; the embedding is a lookup)."""
    d, h = cfg.width, cfg.mlp_width
    return cfg.layers * (4 * d * d + 2 * d * h) + VOCAB * d


def synthetic_bytes(size: int, seed: int = 0) -> np.ndarray:
    """Random bytes 1..255 (a 0 byte would reset the state, as a document boundary does)."""
    return np.random.default_rng(seed).integers(1, 256, size, dtype=np.uint8)


def timers(cfg, backend, data):
    """A fresh run of ``cfg`` and two timers over it: ``step(laps=None)`` runs one whole training
    step and returns its seconds (``laps`` collects the phases'), ``infer()`` runs the unperturbed
    model on the same batch and returns its seconds and log-likelihoods (scripts/speed/ab.py calls
    each version's own, in a process of its own)."""
    from . import train
    from .data import stream_windows

    run = train.Run.fresh(cfg)

    def step(laps=None):
        start = time.perf_counter()
        train.train_step(run, data, backend, laps)
        return time.perf_counter() - start

    def infer():
        tokens = np.repeat(stream_windows(data, cfg.pairs, run.step, cfg.window), 2, axis=0)
        state = run.recurrent.copy()
        start = time.perf_counter()
        ll = backend.forward(run.params, cfg, tokens, state)
        return time.perf_counter() - start, ll

    return run, step, infer


def measure(cfg: Config, repeats: int = 10, backend: str = "auto") -> dict:
    """Median training and inference throughput of one setting, its phase shares and peak memory."""
    from .backends import get

    be = get(backend)
    data = synthetic_bytes(max(1 << 20, 4 * cfg.pairs * (cfg.window + 1)))
    _, step, infer = timers(cfg, be, data)
    # with context tables, a step of the same model without them beside each step: the tables' share
    plain_cfg = context.without(cfg)
    plain = timers(plain_cfg, be, data)[1] if plain_cfg else None
    step(), infer(), plain and plain()  # compile, or load the compiled kernels
    train_s, infer_s, plain_s, phases = [], [], [], []
    for _ in range(repeats):
        laps = {}
        train_s.append(step(laps))
        phases.append(laps)
        infer_s.append(infer()[0])
        if plain:
            plain_s.append(plain())
    tokens = cfg.population * cfg.window
    train, inference = tokens / float(np.median(train_s)), tokens / float(np.median(infer_s))
    step = float(np.median(train_s))
    # the ratio of each step to the inference pass right after it: a slow spell of a shared
    # machine slows both, so the median of these is steadier than the ratio of the medians
    ratio = float(np.median(np.array(infer_s) / np.array(train_s)))
    return {
        "width": cfg.width, "layers": cfg.layers, "population": cfg.population, "rank": cfg.rank,
        "window": cfg.window, "context_bits": cfg.context_bits, "context_order": cfg.context_order * context.state_rows(cfg),
        "context_logits": cfg.context_logits,
        "backend": be.name,
        "train_tokens_per_s": round(train), "inference_tokens_per_s": round(inference),
        "ratio": float(f"{ratio:.3g}"),  # significant digits: a step slowed by a busy machine is not 0
        "train_gmacs": round(train * macs_per_token(cfg) / 1e9, 1),
        "inference_gmacs": round(inference * macs_per_token(cfg) / 1e9, 1),
        "step_s": round(step, 6),
        "shares": {p: round(float(np.median([laps.get(p, 0.0) for laps in phases])) / step, 3) for p in PHASES},
        # the whole step's time the tables add (their reads, the forward's table read, their sums and
        # update): 1 - a step without them / a step with them, each step's ratio to the one beside it
        "table_share": round(1 - float(np.median(np.array(plain_s) / np.array(train_s))), 3) if plain else 0.0,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def machine_limit(rows: int = 512, inner: int = 256, cols: int = 256, repeats: int = 20) -> dict:
    """GMAC/s of a (rows x inner) . (inner x cols) int8 product on all cores, three ways."""
    rng = np.random.default_rng(0)
    x = rng.integers(-127, 128, (rows, inner), dtype=np.int8)
    w = rng.integers(-127, 128, (cols, inner), dtype=np.int8)
    exact = x.astype(np.int64) @ w.astype(np.int64).T
    packed, correction = cpu_gemm.pack(w), cpu_gemm.correction(w)
    offset = (x.astype(np.int16) + cpu_gemm.OFFSET).astype(np.uint8)
    xf, wf = x.astype(np.float32), np.ascontiguousarray(w.T.astype(np.float32))
    out = np.zeros((rows, cpu_gemm.padded(cols)), np.int32)
    plain = np.zeros((rows, cols), np.int32)

    def tiled():
        tiled_int8_product(offset, packed.reshape(-1), cpu_gemm.padded(cols), out)

    def rate(fn):
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return float(f"{rows * inner * cols / float(np.median(times)) / 1e9:.3g}")  # never rounds to 0

    result = {f"int8 tile kernel ({cpu_gemm.KERNEL})": rate(tiled),
              "int8 plain Numba dot": rate(lambda: plain_int8_product(x, w, plain)),
              "float32 BLAS": rate(lambda: xf @ wf)}
    if not (np.array_equal(out[:, :cols] + correction[0, :cols], exact) and np.array_equal(plain, exact)):
        raise AssertionError("an int8 product kernel gave a wrong result")
    return result


@njit(parallel=True, cache=True)
def tiled_int8_product(offset, packed, m_pad, out):
    """out = offset . W^T (raw, before the offset correction) with the backend's tile kernel; rows
    split across cores in groups of 32."""
    rows, inner = offset.shape
    x, y = offset.reshape(offset.size), out.reshape(out.size)
    for g in prange(rows // 32):
        i = g * 32
        cpu_gemm.gemm(x[i * inner:], 32, inner, cpu_gemm.GROUP, packed, 0, inner // cpu_gemm.GROUP, m_pad, y[i * m_pad:], m_pad)


@njit(parallel=True, cache=True)
def plain_int8_product(x, w, out):
    """out = x . w^T as the straightforward loop (LLVM turns it into 16-bit multiply-adds)."""
    for i in prange(x.shape[0]):
        for j in range(w.shape[0]):
            s = np.int32(0)
            for k in range(x.shape[1]):
                s = np.int32(s + np.int32(x[i, k]) * np.int32(w[j, k]))
            out[i, j] = s


def run_one(setting: dict, repeats: int, backend: str, processes: int = 1) -> dict:
    """``measure`` in ``processes`` fresh processes, one after the other, so peak memory is the
    setting's own: the figures of the run whose ratio is the median, with every run's ratio
    (``ratio_runs``, sorted) and the largest peak memory. On a shared machine the ratio moves from
    one process to the next by more than it does within one (0.87 to 1.07 at width 128), so one
    process is a sample, not a figure."""
    runs = []
    for _ in range(processes):
        cmd = [sys.executable, "-m", "intlm.bench", json.dumps(setting), str(repeats), backend]
        done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"benchmark of {setting} failed (exit {done.returncode})")
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    runs.sort(key=lambda r: r["ratio"])
    return dict(runs[len(runs) // 2], ratio_runs=[r["ratio"] for r in runs],
                peak_rss_mb=max(r["peak_rss_mb"] for r in runs))


def table_header() -> str:
    """The table's head (100 columns): the setting, throughput, multiply-adds, peak memory."""
    head = (f"{'width':>5} {'L':>2} {'pop':>7} {'rank':>4} {'win':>5} {'ctx':>5} | {'train tok/s':>11} "
            f"{'infer tok/s':>11} {'ratio':>5} {'runs':>9} | {'GMAC/s':>6} {'limit':>5} | {'peak MB':>7}")
    return head + "\n" + "-" * len(head)


def table_row(r: dict, limit: dict) -> str:
    """One result as two lines of at most 100 columns: its figures ('limit': training GMAC/s over
    the fastest kernel of ``limit``), then where a training step's time went (and, with context
    tables, the share of a step they add)."""
    frac = f"{100 * r['train_gmacs'] / max(limit.values()):4.0f}%" if limit else f"{'-':>5}"
    runs = r.get("ratio_runs", [r["ratio"]])
    spread = f"{runs[0]:.2f}-{runs[-1]:.2f}" if len(runs) > 1 else "-"
    ctx = f"{r['context_bits']}/{r['context_order']}{'L' if r.get('context_logits') else ''}" if r["context_bits"] else "-"
    speed = [tqdm.format_sizeof(r[k]) for k in ("train_tokens_per_s", "inference_tokens_per_s")]
    shares = " ".join(f"{p} {100 * r['shares'][p]:.0f}%" for p in PHASES)
    tables = f"; tables {100 * r['table_share']:+.0f}%" if r["context_bits"] else ""
    return (f"{r['width']:>5} {r['layers']:>2} {r['population']:>7} {r['rank']:>4} {r['window']:>5} {ctx:>5} | "
            f"{speed[0]:>11} {speed[1]:>11} {r['ratio']:>5.2f} {spread:>9} | {r['train_gmacs']:>6.1f} {frac} | "
            f"{r['peak_rss_mb']:>7}\n{'time:':>7} {shares}{tables}")


if __name__ == "__main__":  # one setting, measured in this process: used by run_one
    setting, reps, backend_name = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    print(json.dumps(measure(Config(**setting).check(), reps, backend_name)))
