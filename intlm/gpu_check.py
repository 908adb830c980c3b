"""The GPU check: ``python -m intlm.gpu_check`` on a machine with a CUDA GPU and CuPy (see
scripts/gpu_check.sh for the wheel folder a registry-less GPU machine needs). One verdict line per check:

1. each kernel of kernels/*.cu against the NumPy reference on random inputs at worst-case values
   (noise, linear on tensor cores and on dp4a, log-likelihood, update sums past an UPDATE_CHUNK
   boundary and 2**31, the update with int32 / int64 / no momentum, fitness and forward), and the
   context tables' kernels (context.cu) with the default model's table settings (config.PRETRAIN_CONTEXT):
   the table read in fitness and forward, the rows read, the sparse sums and step at worst-case values;
2. ten whole training steps on the cupy, NumPy and Numba backends, without and with the default
   model's context tables: the run arrays, the checkpoint content hash and the checkpoint folders'
   bytes equal;
3. a bench of the cupy backend for the default model (intlm pretrain's: width 32, population 8192,
   context tables), then at width 256 x 6 layers for populations 2**12 .. 2**18: training and
   inference tokens/s, their ratio, int8 tensor-core utilisation against the card's dense int8 peak,
   peak GPU memory (populations left when the time budget runs out are reported as skipped).

Exit status 0 when every check passed, 1 otherwise. Takes under 5 minutes on one H200 (budgeted).
"""

import hashlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DENSE_INT8_PEAK_OPS = 1979e12  # H100/H200 SXM, dense int8 tensor-core peak (datasheet)
TOTAL_BUDGET_S = 270  # the whole check; scripts/gpu_check.sh stops it at 295 s
FAILED = []
SMALL = False  # --small: tiny sizes, no Numba, no bench (the CPU-emulated smoke test of this script)


def worst_case_linear(rng, rows, n, m, rank, sigma):
    """Inputs of one perturbed linear at its extremes (saturated rows, +-127 weights, noise at its
    rank-scaled maximum, mixed with random values) and model.Members.linear's result on them:
    (x, w, raw noise in make_noise's layout for one block, want)."""
    from . import model
    from .config import Config
    from .noise import NOISE_MAX, NOISE_MULT, rank_mult

    cfg = Config(width=16, rank=rank, sigma_shift=sigma, population=rows).check()
    x = rng.choice(np.array([-127, 127, 0, 1, -1], np.int8), (rows, n))
    x[:32] = 127
    w = rng.choice(np.array([-127, 127, 5], np.int8), (m, n))
    top = -(-NOISE_MAX * rank_mult(rank) // NOISE_MULT)
    raw = rng.integers(-top, top + 1, (rows // 2, 1, (m + n) * rank)).astype(np.int8)
    raw[:8] = top
    a = raw[:, 0, :m * rank].reshape(rows // 2, m, rank)
    b = raw[:, 0, m * rank:].reshape(rows // 2, n, rank)
    return x, w, raw, model.Members({"t": (a, b)}, cfg, rows).linear("t", w, x.astype(np.int64))


def table_config(**sizes):
    """A config with the default model's context tables (config.PRETRAIN_CONTEXT; --small: 2**8 rows)."""
    from .config import PRETRAIN_CONTEXT, Config

    return Config(**{**PRETRAIN_CONTEXT, **({"context_bits": 8} if SMALL else {}), **sizes}).check()


def worst_case_table_noise(cfg, rng, step: int = 4):
    """A population's noise (model.make_noise) with every table's B at its rank-scaled extreme +-max in
    random signs; A, hashed when a row is read, keeps its values."""
    from . import context, model
    from .noise import NOISE_MAX, NOISE_MULT, rank_mult

    noise = model.make_noise(cfg, step)
    keys, b = noise[context.NAME]
    top = -(-NOISE_MAX * rank_mult(cfg.rank) // NOISE_MULT)
    noise[context.NAME] = (keys, (top * rng.choice(np.array([-1, 1], np.int8), b.shape)).astype(np.int8))
    return noise


def same_update(gpu, cfg, f, z_ref, z_gpu, params, mom) -> tuple:
    """es.update and the backend's update of copies of ``params`` and ``mom`` (step 2): (parameters
    and momentum equal, weights the reference moved, weights the backend moved)."""
    from . import es

    p_ref, p_gpu = ({k: v.copy() for k, v in params.items()} for _ in range(2))
    m_ref, m_gpu = ({k: v.copy() for k, v in mom.items()} for _ in range(2))
    n_ref, n_gpu = es.update(p_ref, cfg, 2, f, z_ref, m_ref), gpu.update(p_gpu, cfg, 2, f, z_gpu, m_gpu)
    ok = n_ref == n_gpu and all(same(p_ref[k], p_gpu[k]) for k in params) and all(
        same(m_ref[k], m_gpu[k]) and m_ref[k].dtype == m_gpu[k].dtype for k in mom)
    return ok, n_ref, n_gpu


def verdict(name: str, ok: bool, detail: str = ""):
    print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)
    if not ok:
        FAILED.append(name)


def check(name):
    """Run a check function; an exception is its FAIL line."""
    def wrap(fn):
        def run(*args):
            t = time.perf_counter()
            try:
                ok, detail = fn(*args)
            except Exception as err:  # noqa: BLE001 - a check's failure is a verdict, not a crash
                ok, detail = False, f"{type(err).__name__}: {err}"
            verdict(name, ok, f"{detail} ({time.perf_counter() - t:.1f} s)".strip())
        return run
    return wrap


def same(a, b) -> bool:
    if isinstance(a, tuple):
        return all(same(x, y) for x, y in zip(a, b))
    a, b = np.asarray(a), np.asarray(b.get() if hasattr(b, "get") else b)
    return a.shape == b.shape and np.array_equal(a, b)


# --- 1. kernels ---------------------------------------------------------------------------------------

def kernel_checks(gpu, gpu_dp4a, cp):
    from . import arith, es, model
    from .arith import EXP2, EXP2_BITS, LOG2_FRAC, LOG2_MANTISSA_BITS, matmul_shift
    from .backends.cupy import geometry
    from .backends.numba import NumbaBackend
    from .backends.numpy import NumpyBackend
    from .config import Config

    ref, nb = NumpyBackend(), None if SMALL else NumbaBackend()
    rng = np.random.default_rng(12)
    i32 = np.int32

    @check("noise_streams, stream_keys (noise.cu) == model.make_noise over a pair range, rank 4, with context tables")
    def noise():
        cfg = table_config(width=32 if SMALL else 256, layers=2, rank=4, population=128)
        p0, p1 = (5, 8) if SMALL else (5, 40)
        want, got = model.make_noise(cfg, 3, range(p0, p1)), gpu.make_noise(cfg, 3, p0, p1)
        bad = [k for k in want if not same(want[k], got[k])]
        return not bad, f"differs: {bad}" if bad else "every tensor equal"

    noise()

    for kernel, be in (("linear_mma", gpu), ("linear_dp4a", gpu_dp4a)):
        @check(f"{kernel} (linear.cu) == model.Members.linear at worst-case values, both output modes")
        def linear():
            rows, done = (70 if SMALL else 1030), 0
            shapes = ((48, 16, 16, 0), (64, 40, 1, 8)) if SMALL else (
                (48, 16, 16, 0), (256, 1024, 4, 3), (1024, 256, 1, 8), (256, 256, 16, 0))
            for n, m, rank, sigma in shapes:
                x, w, raw, want = worst_case_linear(rng, rows, n, m, rank, sigma)
                grid, block = geometry.linear_grid(rows, m)
                for mode in (0, 1):
                    y32, y8 = cp.zeros((rows, m), cp.int32), cp.zeros((rows, m), cp.int8)
                    be.launch(kernel, grid, block, cp.asarray(x), i32(n), i32(rows), i32(n), cp.asarray(w), i32(m),
                              cp.asarray(raw), i32(1), i32(0), i32(rank), i32(sigma), i32(1), i32(matmul_shift(n)),
                              i32(mode), y32, y8, i32(m))
                    good = same(want, y32) if mode == 0 else same(np.maximum(arith.clip8(want), 0), y8)
                    if not good:
                        return False, f"n={n} m={m} rank={rank} sigma={sigma} mode={mode} differs"
                    done += 1
            return True, f"{done} shapes x modes equal, {rows} rows"

        linear()

    @check("head_loglik (loglik.cu) == arith.log_likelihood at extreme logits")
    def loglik():
        rows = 9 if SMALL else 4099
        y = rng.integers(-400, 400, (rows, 256)).astype(np.int32)
        y[0], y[1], y[2] = 127, -127, -100000
        y[3, 17] = 100000
        bias = rng.integers(-127, 128, 256).astype(np.int8)
        tokens = rng.integers(0, 256, (rows, 2)).astype(np.uint8)
        want = arith.log_likelihood(arith.clip8(y.astype(np.int64) + bias), tokens[:, 1])
        ll, fit = cp.zeros((rows, 1), cp.int32), cp.full(rows, 5, cp.int32)
        grid, block = geometry.row_grid(rows)
        gpu.launch("head_loglik", grid, block, cp.asarray(y), cp.asarray(bias), cp.zeros(16, cp.int8), i32(0), i32(0),
                   cp.asarray(tokens), i32(2), i32(0), i32(0), cp.asarray(EXP2), cp.asarray(LOG2_FRAC), i32(EXP2_BITS),
                   i32(LOG2_MANTISSA_BITS), i32(3), fit, ll, i32(1), cp.zeros(16, cp.int32), i32(0), i32(rows))
        return same(want, ll[:, 0]) and same(want + 5, fit), f"{rows} rows"

    loglik()

    @check("update_sums_matrix (update.cu) == exact int64 sum over 80,000 terms (3 int32 runs, total > 2**31)")
    def update_sums_chunks():
        pairs, rank, m, n = (300, 2, 8, 8) if SMALL else (40_000, 2, 64, 48)  # SMALL: no chunk boundary
        f = rng.choice(np.array([-8, 8], np.int32), pairs)
        raw = rng.choice(np.array([-78, 78], np.int8), (pairs, 1, (m + n) * rank))
        raw[:, :, :4 * rank] = 78 * np.sign(f).astype(np.int8)[:, None, None]  # rows 0..3 of Z: all terms +
        raw[:, :, m * rank:] = np.abs(raw[:, :, m * rank:])
        a = raw[:, 0, :m * rank].reshape(pairs, m, rank).astype(np.int64)
        b = raw[:, 0, m * rank:].reshape(pairs, n, rank).astype(np.int64)
        want = np.einsum("p,pmr,pnr->mn", f.astype(np.int64), a, b)
        z = cp.zeros((1, m, n), cp.int64)
        grid, block = geometry.update_grid(m, n, 1)
        gpu.launch("update_sums_matrix", grid, block, cp.asarray(raw), i32(pairs), i32(1), i32(m), i32(n), i32(rank),
                   cp.asarray(f), z)
        return same(want, z[0]) and (SMALL or np.abs(want).max() > 2 ** 31), f"max |Z| {np.abs(want).max()}"

    update_sums_chunks()

    for momentum in (None, np.int32, np.int64):
        @check(f"update_sums + update_step (update.cu) == es.update_sums + es.update, momentum {getattr(momentum, '__name__', 'none')}")
        def update():
            cfg = Config(width=16 if SMALL else 64, layers=1 if SMALL else 2, population=12 if SMALL else 512, rank=4,
                         momentum_shift=0 if momentum is None else 3).check()
            f = rng.integers(-8, 9, cfg.pairs).astype(np.int32)
            z_ref, z_gpu = es.update_sums(cfg, model.make_noise(cfg, 1), f), gpu.update_sums(cfg, gpu.make_noise(cfg, 1), f)
            if not all(same(z_ref[k], z_gpu[k]) for k in z_ref):
                return False, "Z differs"
            params = {k: rng.integers(-127, 128, v.shape).astype(np.int8) for k, v in model.init_params(cfg).items()}
            mom = {} if momentum is None else {k: rng.integers(-30000, 30000, v.shape).astype(momentum)
                                               for k, v in params.items()}
            ok, n_ref, n_gpu = same_update(gpu, cfg, f, z_ref, z_gpu, params, mom)
            return ok, f"{n_gpu} weights moved (reference {n_ref})"

        update()

    for extreme, tables in ((False, False), (True, False), (True, True)):
        @check(f"population_fitness and forward (all forward kernels) == numpy and numba, "
               f"{'extreme' if extreme else 'initial'} parameters" + (
                   ", the default model's context tables (context.cu's context_read, and context_rows == "
                   "rows_read)" if tables else ""))
        def fitness():
            sizes = dict(width=16, layers=1, mlp_ratio=2, population=8, rank=4, window=2 + 2 * tables) if SMALL else \
                dict(width=64, layers=2, mlp_ratio=4, population=256, rank=4, window=8 + 8 * tables)
            cfg = table_config(**sizes) if tables else Config(**sizes).check()
            p0, p1, fr = (1, 3, 3) if SMALL else (3, 100, 40)
            params = model.init_params(cfg)
            if extreme:
                params = {k: rng.integers(-127, 128, v.shape).astype(np.int8) for k, v in params.items()}
            tokens = rng.integers(0, 256, (cfg.pairs, cfg.window + 1)).astype(np.uint8)
            tokens[::7, min(3, cfg.window)] = 0  # a document starts: the state (and the bytes before) forgotten
            tokens[1::7] = tokens[1::7, :1]  # the same byte again and again: a table row read many times
            state = rng.integers(-127, 128, model.state_shape(cfg, cfg.population)).astype(np.int8)
            outs = []
            for be in (ref, gpu, gpu_dp4a) if SMALL else (ref, nb, gpu, gpu_dp4a):
                s = state.copy()
                f = be.population_fitness(params, cfg, be.make_noise(cfg, 4, p0, p1), tokens, s, p0, p1)
                s2 = state[:fr].copy()
                ll = be.forward(params, cfg, tokens[:fr], s2)
                outs.append((f, s, ll, s2) + (be.rows_read(cfg, tokens, state[0::2, cfg.layers]) if tables else ()))
            ok = all(all(np.array_equal(a, b) for a, b in zip(outs[0], o)) for o in outs[1:])
            return ok, "numpy, numba, cupy (mma) and cupy (dp4a) agree" if ok else "differs"

        fitness()

    table_update_checks(gpu, rng)


def table_update_checks(gpu, rng):
    """context.cu's sparse sums and step against the reference, with the default model's table settings."""
    from . import context, es, model
    from .config import worst_case_bounds

    for momentum in (None, np.int32, np.int64):
        @check(f"context_sums + context_step (context.cu) == context.update_sums + context.update at worst-case "
               f"values, default tables, momentum {getattr(momentum, '__name__', 'none')}")
        def update():
            cfg = table_config(population=16 if SMALL else 256, window=8 if SMALL else 32,
                               momentum_shift=0 if momentum is None else 3)
            noise = worst_case_table_noise(cfg, rng)
            f = rng.choice(np.array([-8, 8, 0], np.int32), cfg.pairs)
            reads = rng.integers(0, 1 << cfg.context_bits, (cfg.pairs, cfg.window, cfg.context_order - 1))
            reads[::2] %= 7  # a few rows read by many pairs, many times in a window
            # per-byte differences for reads credit (context.credit; ignored by window credit) at their bound,
            # zeros among them; with mirrors (the default model) each part its own (context.byte_differences)
            top = 2 * worst_case_bounds(cfg)["window log-likelihood"] // cfg.window
            shape = (cfg.pairs,) + (2,) * context.mirrors(cfg) + (cfg.window,)
            local = rng.choice(np.array([-top, -1, 0, 1, top]), shape)
            z_ref, z_gpu = es.update_sums(cfg, noise, f, reads, local), gpu.update_sums(cfg, noise, f, reads, local)
            if not all(same(z_ref[k], z_gpu[k]) for k in z_ref):
                return False, "Z differs (a table's: read, Z, S)"
            params = {k: rng.integers(-127, 128, v.shape).astype(np.int8) for k, v in model.init_params(cfg).items()}
            table = params[context.NAME]
            table[:, :7] = rng.choice(np.array([-127, 127], np.int8), table[:, :7].shape)  # the steps saturate
            bound = worst_case_bounds(cfg)["momentum M"]
            mom = {} if momentum is None else {k: rng.integers(-bound, bound + 1, v.shape).astype(momentum)
                                               for k, v in params.items()}
            ok, n_ref, n_gpu = same_update(gpu, cfg, f, z_ref, z_gpu, params, mom)
            return ok, f"{len(z_ref[context.NAME][0])} rows read, {n_gpu} weights moved (reference {n_ref})"

        update()


# --- 2. training steps --------------------------------------------------------------------------------

def training_check(gpu):
    from .config import Config

    for tables in (False, True):
        @check(f"10 training steps: cupy == numpy == numba (run arrays, checkpoint content hash, checkpoint bytes), "
               f"{'the default model (context tables)' if tables else 'no context tables'}")
        def steps():
            sizes = dict(width=16, layers=1, mlp_ratio=2, population=6, window=2, rank=2, momentum_shift=3) if SMALL \
                else dict(width=32, layers=2, population=512, window=16, rank=2, momentum_shift=3)
            return training_steps(table_config(**sizes) if tables else Config(**sizes).check(), gpu)

        steps()


def training_steps(cfg, gpu):
    """(ok, detail) of 10 training steps (2 with --small) of ``cfg`` on every backend."""
    from . import checkpoint, train
    from .run import Run
    from .backends.numba import NumbaBackend
    from .backends.numpy import NumpyBackend

    n_steps = 2 if SMALL else 10
    rng = np.random.default_rng(3)
    words = [b"the ", b"quick ", b"brown ", b"fox ", b"jumps ", b"over ", b"lazy ", b"dogs. ", b"\x00"]
    data = np.frombuffer(b"".join(words[i] for i in rng.integers(0, len(words), 20000)), np.uint8)
    hashes, trees, arrays = [], [], []
    for be in (NumpyBackend(), gpu) if SMALL else (NumpyBackend(), NumbaBackend(), gpu):
        run = Run.fresh(cfg)
        for _ in range(n_steps):
            train.train_step(run, data, be)
        arrays.append(run.arrays())
        with tempfile.TemporaryDirectory() as tmp:
            path = run.save(Path(tmp), {"train_sha256_16": "x", "train_bytes": len(data), "val_bytes": 0, "source": None})
            hashes.append(checkpoint.content_hash(run.arrays(), {}))
            digest = hashlib.sha256()
            for f in sorted(p for p in Path(path).rglob("*") if p.is_file()):
                digest.update(str(f.relative_to(path)).encode() + f.read_bytes())
            trees.append(digest.hexdigest())
    ok = all(a.keys() == arrays[0].keys() and all(np.array_equal(a[k], arrays[0][k]) for k in a) for a in arrays)
    ok = ok and len(set(hashes)) == 1 and len(set(trees)) == 1
    return ok, f"content hash {hashes[-1][:16]}, checkpoint bytes {trees[-1][:16]} (numpy, numba, cupy: " \
               f"{'equal' if ok else ', '.join(h[:8] for h in trees)})"


# --- 3. bench -----------------------------------------------------------------------------------------

def shared_macs(cfg) -> int:
    """Multiply-adds of the shared int8 products x.W^T per member and byte (the tensor-core work)."""
    d, h, L = cfg.width, cfg.mlp_width, cfg.layers
    return L * (4 * d * d + 2 * d * h) + 256 * d


def bench(gpu, cp, t0, width=256, layers=6, powers=range(12, 19), window=64, context=None):
    """Training and inference figures of the cupy backend for populations 2**k, k in ``powers``;
    ``context``: the context tables' Config fields (e.g. config.PRETRAIN_CONTEXT), none if None."""
    from . import train
    from .config import Config
    from .run import Run
    from .data import stream_windows

    pool = cp.get_default_memory_pool()
    last = 0.0  # seconds the previous population took; the next one takes about twice that
    rng = np.random.default_rng(0)
    data = rng.integers(1, 256, 1 << 20).astype(np.uint8)
    tables = f", context tables {context}" if context else ""
    print(f"bench: cupy backend, width {width} x {layers} layers, rank 1, window {window}{tables} "
          f"(tokens/s = members x window / s)", flush=True)
    for k in powers:
        cfg = Config(width=width, layers=layers, population=1 << k, rank=1, window=window, **(context or {})).check()
        begun = time.perf_counter()
        if begun - t0 + 2.5 * last > TOTAL_BUDGET_S:
            print(f"SKIP bench population 2^{k}: would not finish within the check's {TOTAL_BUDGET_S} s", flush=True)
            continue
        try:
            pool.free_all_blocks()
            run = Run.fresh(cfg)
            train.train_step(run, data, gpu)  # warm-up (first compile at 2^12)
            cp.cuda.Device().synchronize()
            pool.free_all_blocks()
            laps = {}
            t = time.perf_counter()
            train.train_step(run, data, gpu, laps)
            cp.cuda.Device().synchronize()
            t_train = time.perf_counter() - t
            peak = pool.total_bytes()
            tokens = np.repeat(stream_windows(data, cfg.pairs, 1, cfg.window), 2, axis=0)
            state = run.recurrent.copy()
            gpu.forward(run.params, cfg, tokens, state)
            t = time.perf_counter()
            gpu.forward(run.params, cfg, tokens, state)
            cp.cuda.Device().synchronize()
            t_inf = time.perf_counter() - t
            toks = cfg.population * cfg.window
            util = 2 * shared_macs(cfg) * toks / t_inf / DENSE_INT8_PEAK_OPS
            phases = ", ".join(f"{p} {s:.2f}" for p, s in laps.items())
            print(f"bench population 2^{k}: training {toks / t_train:,.0f} tokens/s, inference {toks / t_inf:,.0f} "
                  f"tokens/s, ratio {t_inf / t_train:.2f}, int8 tensor-core utilisation {100 * util:.2f}% of "
                  f"{DENSE_INT8_PEAK_OPS / 1e12:.0f} TOPS (inference, shared products), peak GPU memory "
                  f"{peak / 2**30:.2f} GiB; training phases s: {phases}", flush=True)
            last = time.perf_counter() - begun
        except Exception as err:  # noqa: BLE001
            verdict(f"bench population 2^{k}", False, f"{type(err).__name__}: {err}")


def main() -> int:
    global SMALL
    SMALL = "--small" in sys.argv
    t0 = time.perf_counter()
    try:
        import cupy as cp

        from .backends.cupy import CupyBackend

        gpu, gpu_dp4a = CupyBackend("mma"), CupyBackend("dp4a")
    except Exception as err:  # noqa: BLE001
        verdict("cupy backend available", False, f"{type(err).__name__}: {err}")
        return 1
    props = cp.cuda.runtime.getDeviceProperties(0)
    print(f"device: {props['name'].decode()}, compute capability {props['major']}.{props['minor']}, "
          f"CuPy {cp.__version__}", flush=True)
    kernel_checks(gpu, gpu_dp4a, cp)
    training_check(gpu)
    if "--no-bench" not in sys.argv and not SMALL:
        from .config import PRETRAIN_CONTEXT, Config

        default = Config()  # the model intlm pretrain trains: the defaults and their context tables
        bench(gpu, cp, t0, width=default.width, layers=default.layers, powers=[default.population.bit_length() - 1],
              window=default.window, context=PRETRAIN_CONTEXT)
        bench(gpu, cp, t0)
    print(f"{'ALL PASSED' if not FAILED else 'FAILED: ' + '; '.join(FAILED)} ({time.perf_counter() - t0:.0f} s)")
    return 0 if not FAILED else 1


if __name__ == "__main__":
    sys.exit(main())
