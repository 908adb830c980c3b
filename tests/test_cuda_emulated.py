"""The cupy backend and its real kernels (kernels/*.cu) against the NumPy reference, bit for bit, on
the CPU: tests/cuda_emulator.py compiles the CUDA source with g++ and runs each CUDA thread as a
fiber behind a stand-in for CuPy. This checks the kernels' arithmetic, indexing and guards and the
backend's orchestration; the GPU itself (and the hardware's mma fragment layout, emulated here from
the PTX ISA) is checked only by ``python -m intlm.gpu_check`` on a GPU. Skipped without g++."""

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cuda_emulator as emu
from intlm import arith, context, es, model, train
from intlm.arith import EXP2, EXP2_BITS, LOG2_FRAC, LOG2_MANTISSA_BITS, matmul_shift
from intlm.backends.numpy import NumpyBackend
from intlm.config import Config, worst_case_bounds
from intlm.gpu_check import same, same_update, worst_case_linear, worst_case_table_noise
from intlm.run import Run

pytestmark = pytest.mark.skipif(not emu.available(), reason="g++ is needed to emulate the CUDA kernels")

CFG = Config(width=48, layers=2, mlp_ratio=2, population=8, rank=3, window=2, momentum_shift=2).check()
# tiny models with context tables (context.py): one table of rank 1 without momentum, three of rank 3 with
TABLES = [Config(width=16, layers=1, mlp_ratio=2, population=8, rank=1, window=4, momentum_shift=0, context_bits=8,
                 context_order=2).check(),
          Config(width=32, layers=2, mlp_ratio=1, population=8, rank=3, window=8, momentum_shift=2, context_bits=8,
                 context_order=4).check()]
if "context_logits" in {f.name for f in dataclasses.fields(Config)}:  # rows that add to the logits too
    TABLES.append(Config(width=16, layers=1, mlp_ratio=2, population=8, rank=2, window=4, momentum_shift=3,
                         context_bits=8, context_order=3, context_logits=1).check())
# each member scored again with its rows' logit perturbation negated (context.mirrors), graded credit
MIRRORS = dataclasses.replace(TABLES[-1], context_credit="graded", context_mirror=1).check()


@pytest.fixture(scope="module")
def cupy_module():
    return emu.fake_cupy(emu.workdir())


@pytest.fixture
def backends(cupy_module, monkeypatch):
    """(numpy reference, cupy backend with linear_mma, cupy backend with linear_dp4a), the latter two
    running on the emulated CuPy."""
    monkeypatch.setitem(sys.modules, "cupy", cupy_module)
    import intlm.backends.cupy as gpu

    monkeypatch.setattr(gpu, "_MODULES", {})
    return NumpyBackend(), gpu.CupyBackend("mma"), gpu.CupyBackend("dp4a")


def host(a):
    return tuple(np.asarray(x) for x in a) if isinstance(a, tuple) else np.asarray(a)


def extreme_params(cfg, rng):
    """Parameters spread over the whole int8 range (clips and saturations happen)."""
    params = model.init_params(cfg)
    return {k: rng.integers(-127, 128, v.shape).astype(np.int8) for k, v in params.items()}


def test_noise_matches_a_pair_range(backends):
    ref, gpu, _ = backends
    cfg = Config(width=32, layers=1, mlp_ratio=1, population=10, rank=16).check()
    want, got = model.make_noise(cfg, 7, range(2, 5)), gpu.make_noise(cfg, 7, 2, 5)
    for name, value in want.items():
        g = host(got[name])
        assert all(np.array_equal(a, b) for a, b in zip(value, g)) if isinstance(value, tuple) \
            else np.array_equal(value, g), name


@pytest.mark.parametrize("which", [1, 2])
@pytest.mark.parametrize("extreme", [False, True])
def test_population_fitness_and_forward_match(backends, which, extreme):
    """Fitness and carried state of pairs [1, 4) (a 0 byte inside the window resets a row), and the
    unperturbed forward, equal the reference's with the tensor-core (1) and the dp4a (2) linear."""
    ref, gpu = backends[0], backends[which]
    rng = np.random.default_rng(which + 2 * extreme)
    params = extreme_params(CFG, rng) if extreme else model.init_params(CFG)
    tokens = rng.integers(0, 256, (CFG.pairs, CFG.window + 1)).astype(np.uint8)
    tokens[2, 1] = 0
    state = rng.integers(-127, 128, (CFG.population, CFG.layers, CFG.width)).astype(np.int8)
    s_ref, s_gpu = state.copy(), state.copy()
    f_ref = ref.population_fitness(params, CFG, ref.make_noise(CFG, 3, 1, 4), tokens, s_ref, 1, 4)
    f_gpu = gpu.population_fitness(params, CFG, gpu.make_noise(CFG, 3, 1, 4), tokens, s_gpu, 1, 4)
    assert np.array_equal(f_ref, f_gpu) and np.array_equal(s_ref, s_gpu)
    tok = rng.integers(0, 256, (3, 3)).astype(np.uint8)
    s_ref, s_gpu = state[:3].copy(), state[:3].copy()
    assert np.array_equal(ref.forward(params, CFG, tok, s_ref), gpu.forward(params, CFG, tok, s_gpu))
    assert np.array_equal(s_ref, s_gpu)


@pytest.mark.parametrize("kernel,n,m,rank,sigma", [
    ("linear_mma", 48, 16, 16, 0), ("linear_mma", 64, 40, 1, 8), ("linear_mma", 16, 256, 5, 3),
    ("linear_dp4a", 48, 16, 16, 0), ("linear_dp4a", 64, 40, 1, 8)])
def test_linear_at_worst_case_values(backends, kernel, n, m, rank, sigma):
    """linear.cu against model.Members.linear with inputs, weights and noise at their extremes (and
    random), rows past a tile edge, both output modes."""
    gpu = backends[1]
    cp = sys.modules["cupy"]
    rng = np.random.default_rng(n + m + rank)
    rows = 70  # two row tiles, the second partial
    x, w, raw, want = worst_case_linear(rng, rows, n, m, rank, sigma)
    shift = matmul_shift(n)
    grid, block = gpu_geometry().linear_grid(rows, m)
    for mode in (0, 1):
        y32, y8 = cp.zeros((rows, m), np.int32), cp.zeros((rows, m), np.int8)
        gpu.launch(kernel, grid, block, cp.asarray(x), np.int32(n), np.int32(rows), np.int32(n), cp.asarray(w),
                   np.int32(m), cp.asarray(raw), np.int32(1), np.int32(0), np.int32(rank), np.int32(sigma),
                   np.int32(1), np.int32(shift), np.int32(mode), y32, y8, np.int32(m))
        if mode == 0:
            assert np.array_equal(np.asarray(y32), want)
        else:
            assert np.array_equal(np.asarray(y8), np.maximum(arith.clip8(want), 0))


def gpu_geometry():
    from intlm.backends.cupy import geometry

    return geometry


@pytest.mark.parametrize("extra_ld", [0, 300])
def test_log_likelihood_at_extremes(backends, extra_ld):
    """head_loglik against arith.log_likelihood: logits saturated both ways, flat, one-hot; with extra_ld,
    the context tables' logits (rows of extra_ld entries, their sums up to 7 x 127) added before the clip."""
    gpu = backends[1]
    cp = sys.modules["cupy"]
    rng = np.random.default_rng(5)
    rows = 9
    y = rng.integers(-300, 300, (rows, 256)).astype(np.int32)
    y[0], y[1], y[2] = 127, -127, -1000
    y[3, 17] = 1000
    bias = rng.integers(-127, 128, 256).astype(np.int8)
    tokens = rng.integers(0, 256, (rows, 2)).astype(np.uint8)
    tokens[3, 1] = 17
    extra = rng.integers(-889, 890, (rows, max(extra_ld, 1))).astype(np.int32)
    added = extra[:, :256] if extra_ld else 0
    want = arith.log_likelihood(arith.clip8(y.astype(np.int64) + bias + added), tokens[:, 1])
    ll, fit = cp.zeros((rows, 1), np.int32), cp.asarray(np.full(rows, 5, np.int32))
    grid, block = gpu_geometry().row_grid(rows)
    gpu.launch("head_loglik", grid, block, cp.asarray(y), cp.asarray(bias), cp.zeros(16, np.int8), np.int32(0),
               np.int32(0), cp.asarray(tokens), np.int32(2), np.int32(0), np.int32(0), cp.asarray(EXP2),
               cp.asarray(LOG2_FRAC), np.int32(EXP2_BITS), np.int32(LOG2_MANTISSA_BITS), np.int32(3), fit, ll,
               np.int32(1), cp.asarray(extra), np.int32(extra_ld), np.int32(rows))
    assert np.array_equal(np.asarray(ll)[:, 0], want)
    assert np.array_equal(np.asarray(fit), want + 5)


def test_update_sums_across_chunks(backends):
    """update_sums_matrix over more than UPDATE_CHUNK terms at the largest |f a b|: int32 partial sums,
    int64 total, equal to the exact sum."""
    gpu = backends[1]
    cp = sys.modules["cupy"]
    rng = np.random.default_rng(6)
    pairs, rank, m, n = 22_100, 2, 8, 8  # 44,200 terms of 48,672: two int32 runs, total > 2**31
    f = rng.choice(np.array([-8, 8], np.int32), pairs)
    raw = np.full((pairs, 1, (m + n) * rank), 78, np.int8)
    raw[:, :, :m * rank] *= np.sign(f).astype(np.int8)[:, None, None]  # every term +8 * 78 * 78
    a = raw[:, 0, :m * rank].reshape(pairs, m, rank).astype(np.int64)
    b = raw[:, 0, m * rank:].reshape(pairs, n, rank).astype(np.int64)
    want = np.einsum("p,pmr,pnr->mn", f.astype(np.int64), a, b)
    assert np.abs(want).max() > (1 << 31)  # the int64 total is needed
    z = cp.zeros((1, m, n), np.int64)
    grid, block = gpu_geometry().update_grid(m, n, 1)
    gpu.launch("update_sums_matrix", grid, block, cp.asarray(raw), np.int32(pairs), np.int32(1), np.int32(m),
               np.int32(n), np.int32(rank), cp.asarray(f), z)
    assert np.array_equal(np.asarray(z)[0], want)


@pytest.mark.parametrize("momentum", [None, np.int32, np.int64])
def test_update_sums_and_update_match(backends, momentum):
    ref, gpu, _ = backends
    cfg = Config(width=16, layers=1, mlp_ratio=2, population=12, rank=2, momentum_shift=0 if momentum is None else 3,
                 sigma_shift=2).check()
    rng = np.random.default_rng(7)
    f = rng.integers(-8, 9, cfg.pairs).astype(np.int32)
    z_ref, z_gpu = ref.update_sums(cfg, ref.make_noise(cfg, 1), f), gpu.update_sums(cfg, gpu.make_noise(cfg, 1), f)
    assert all(np.array_equal(z_ref[k], np.asarray(z_gpu[k])) for k in z_ref)
    params = extreme_params(cfg, rng)
    p_ref, p_gpu = ({k: v.copy() for k, v in params.items()} for _ in range(2))
    mom = {} if momentum is None else {k: rng.integers(-5000, 5000, v.shape).astype(momentum)
                                       for k, v in params.items()}
    m_ref, m_gpu = ({k: v.copy() for k, v in mom.items()} for _ in range(2))
    assert ref.update(p_ref, cfg, 2, f, z_ref, m_ref) == gpu.update(p_gpu, cfg, 2, f, z_gpu, m_gpu)
    assert all(np.array_equal(p_ref[k], p_gpu[k]) for k in params)
    assert all(np.array_equal(m_ref[k], m_gpu[k]) and m_gpu[k].dtype == m_ref[k].dtype for k in mom)


@pytest.mark.parametrize("cfg", [Config(width=16, layers=1, mlp_ratio=2, population=6, rank=2, window=2,
                                         momentum_shift=2).check(),
                                  dataclasses.replace(TABLES[1], layers=1, window=4).check()] + TABLES[2:] + [MIRRORS],
                         ids=["dense", "tables", "logits", "mirrors"])
def test_training_steps_identical(backends, cfg):
    """Whole training steps (noise, rows read, fitness, pair state, shaping, update sums, update) leave
    the same run arrays on the emulated GPU backend as on the reference, with and without context tables."""
    ref, gpu, _ = backends
    data = np.frombuffer(b"to be or not to be, that is the question\x00whether tis nobler", np.uint8)
    runs = [Run.fresh(cfg) for _ in range(2)]
    for _ in range(2):
        stats = [train.train_step(run, data, be) for run, be in zip(runs, (ref, gpu))]
        assert stats[0] == stats[1]
    a, b = (run.arrays() for run in runs)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)


def test_without_cupy_the_backend_is_one_error_line(tmp_path):
    """Where CuPy is not installed, `pretrain --backend cupy` is one error line and exit status 2 (no
    run folder made), and auto passes over cupy."""
    probe = subprocess.run([sys.executable, "-c", "import cupy"], capture_output=True)
    if probe.returncode == 0:
        pytest.skip("CuPy is installed here")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("to be or not to be. " * 500)
    done = subprocess.run([sys.executable, "-m", "intlm.cli", "pretrain", str(corpus), "--out", str(tmp_path / "run"),
                           "--steps", "1", "--backend", "cupy", "--width", "16", "--population", "4"],
                          capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().count("\n") == 0 and done.stderr.startswith("error: the cupy backend"), done.stderr
    assert not (tmp_path / "run").exists()
    code = "from intlm.backends import get; print(get('auto').name)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() != "cupy"


def test_gpu_check_script_runs(backends, capsys, monkeypatch):
    """``python -m intlm.gpu_check --small`` on the emulated CuPy: every check of the GPU script runs
    and passes at tiny sizes (so the script itself is not first run on a GPU)."""
    from intlm import gpu_check

    monkeypatch.setattr(sys, "argv", ["gpu_check", "--small"])
    monkeypatch.setattr(gpu_check, "FAILED", [])
    status = gpu_check.main()
    out = capsys.readouterr().out
    assert status == 0, out
    lines = [line for line in out.splitlines() if line.startswith(("PASS", "FAIL"))]
    assert len(lines) == 16 and all(line.startswith("PASS") for line in lines), out


@pytest.mark.parametrize("context", [None, {"context_bits": 8, "context_order": 3}])
def test_gpu_check_bench_runs(backends, capsys, context):
    """The GPU check's bench code, at a tiny size on the emulated CuPy, without and with context
    tables: one line of figures."""
    import time

    from intlm import gpu_check

    gpu_check.bench(backends[1], sys.modules["cupy"], time.perf_counter(), width=16, layers=1, powers=[2], window=2,
                    context=context)
    out = capsys.readouterr().out
    assert "bench population 2^2: training" in out and "tokens/s" in out and "FAIL" not in out, out


def test_pair_ranges_combine_exactly(backends):
    """The cupy backend's fitness and carried state over pairs [0, 1) then [1, 4), each with its own
    range's noise, equal one call over [0, 4)."""
    _, gpu, _ = backends
    cfg = Config(width=16, layers=1, mlp_ratio=2, population=8, rank=2, window=2).check()
    rng = np.random.default_rng(9)
    params = model.init_params(cfg)
    tokens = rng.integers(0, 256, (cfg.pairs, cfg.window + 1)).astype(np.uint8)
    state = rng.integers(-127, 128, (cfg.population, cfg.layers, cfg.width)).astype(np.int8)
    whole_state, split_state = state.copy(), state.copy()
    whole = gpu.population_fitness(params, cfg, gpu.make_noise(cfg, 1), tokens, whole_state)
    parts = [gpu.population_fitness(params, cfg, gpu.make_noise(cfg, 1, p0, p1), tokens, split_state, p0, p1)
             for p0, p1 in ((0, 1), (1, 4))]
    assert np.array_equal(whole, np.concatenate(parts)) and np.array_equal(whole_state, split_state)


# --- context tables (context.cu) -------------------------------------------------------------------

def table_state(cfg, rng):
    """A random population state whose extra row holds random bytes before (context.history_slots)."""
    return rng.integers(-127, 128, model.state_shape(cfg, cfg.population)).astype(np.int8)


def test_table_noise_matches_a_pair_range(backends):
    """stream_keys and noise_streams from B's start (noise.cu) == context.make_noise over pairs [1, 3)."""
    _, gpu, _ = backends
    cfg = TABLES[1]
    want, got = context.make_noise(cfg, 5, range(1, 3)), gpu.make_noise(cfg, 5, 1, 3)[context.NAME]
    assert all(np.array_equal(w, np.asarray(g)) and w.dtype == np.asarray(g).dtype for w, g in zip(want, got))


@pytest.mark.parametrize("cfg", TABLES + [MIRRORS], ids=["table1", "tables3", "logits", "mirrors"])
def test_table_read_forward_and_rows_match(backends, cfg):
    """context_read (the table read, with the bytes before and their reset by a 0 byte) through the
    fitness of pairs [1, 4), the carried state and the unperturbed forward; context_rows == rows_read.
    Every weight and table entry at random int8 values, a third of the table at +-127, so the
    perturbed rows and their sums with the embedding (and the logits) clip."""
    ref, gpu, _ = backends
    rng = np.random.default_rng(cfg.context_order)
    params = extreme_params(cfg, rng)
    params[context.NAME][:, ::3] = rng.choice(np.array([-127, 127], np.int8), params[context.NAME][:, ::3].shape)
    tokens = rng.integers(0, 256, (cfg.pairs, cfg.window + 1)).astype(np.uint8)
    tokens[2, 2] = 0  # a document starts inside the window: the bytes before read as 0 after it
    tokens[3, :] = tokens[3, 0]  # one row read again and again
    state = table_state(cfg, rng)
    s_ref, s_gpu = state.copy(), state.copy()
    f_ref = ref.population_fitness(params, cfg, ref.make_noise(cfg, 3, 1, 4), tokens, s_ref, 1, 4)
    f_gpu = gpu.population_fitness(params, cfg, gpu.make_noise(cfg, 3, 1, 4), tokens, s_gpu, 1, 4)
    assert np.array_equal(f_ref, f_gpu) and np.array_equal(s_ref, s_gpu)
    assert not np.array_equal(s_ref[2:8, cfg.layers], state[2:8, cfg.layers])  # the bytes before moved on
    s_ref, s_gpu = state[:3].copy(), state[:3].copy()
    assert np.array_equal(ref.forward(params, cfg, tokens[:3], s_ref), gpu.forward(params, cfg, tokens[:3], s_gpu))
    assert np.array_equal(s_ref, s_gpu)
    want, got = context.rows_read(cfg, tokens, state[0::2, cfg.layers]), gpu.rows_read(cfg, tokens, state[0::2, cfg.layers])
    assert all(np.array_equal(w, g) and g.dtype == np.int64 for w, g in zip(want, got))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=st.integers(2, 8), bits=st.integers(8, 20), seed=st.integers(0, 2 ** 32 - 1))
def test_rows_read_at_every_order_and_size(backends, order, bits, seed):
    """context_rows == context.rows_read for every order (up to 8: the whole 64-bit key) and every row
    count Config allows, windows full of document starts (0 bytes) and bytes >= 128 (stored signed)."""
    _, gpu, _ = backends
    cfg = Config(width=16, population=10, window=6, context_bits=bits, context_order=order).check()
    rng = np.random.default_rng(seed)
    tokens = rng.choice(np.array([0, 1, 97, 127, 128, 200, 255], np.uint8), (cfg.pairs, cfg.window + 1))
    state_row = rng.integers(-128, 128, (cfg.pairs, cfg.width)).astype(np.int8)
    want, got = context.rows_read(cfg, tokens, state_row), gpu.rows_read(cfg, tokens, state_row)
    assert all(np.array_equal(w, g) for w, g in zip(want, got))


@pytest.mark.parametrize("credit", ["window", "reads", "graded"])
@pytest.mark.parametrize("momentum", [None, np.int32, np.int64])
def test_table_update_sums_and_update_at_worst_case(backends, momentum, credit):
    """context_credit, context_sums and context_step == context.credit, context.update_sums and
    context.update (through es.update_sums and es.update, the dense tensors alongside): f at
    +-RANK_LEVELS and 0, per-byte differences at their int32 extremes and 0, B at its extreme, windows
    that read a few rows many times (a pair counts a row once), table weights at +-127 (the steps
    saturate) and momentum at its worst-case bound."""
    _, gpu, _ = backends
    cfg = dataclasses.replace({None: TABLES[0], np.int32: TABLES[1], np.int64: TABLES[-1]}[momentum],
                              context_credit=credit).check()
    rng = np.random.default_rng(11)
    noise = worst_case_table_noise(cfg, rng)
    f = rng.choice(np.array([-8, 8, 0], np.int32), cfg.pairs)
    f[:2] = (8, -8)
    reads = rng.integers(0, 5, (cfg.pairs, cfg.window, cfg.context_order - 1))  # rows 0..4: repeats
    reads[-1] = rng.integers(0, 1 << cfg.context_bits, reads[-1].shape)
    bound = 2 * worst_case_bounds(cfg)["window log-likelihood"] // cfg.window  # a byte's difference
    local = rng.choice(np.array([-bound, bound, 0, 1, -1]), (cfg.pairs, cfg.window))
    z_ref, z_gpu = es.update_sums(cfg, noise, f, reads, local), gpu.update_sums(cfg, noise, f, reads, local)
    for name in z_ref:
        got = z_gpu[name] if isinstance(z_ref[name], tuple) else (z_gpu[name],)
        want = z_ref[name] if isinstance(z_ref[name], tuple) else (z_ref[name],)
        assert all(np.array_equal(w, np.asarray(g)) and np.asarray(g).dtype == np.int64 for w, g in zip(want, got)), name
    params = extreme_params(cfg, rng)
    params[context.NAME][:, :5] = rng.choice(np.array([-127, 127], np.int8), params[context.NAME][:, :5].shape)
    mom = {}
    if momentum is not None:
        bound = worst_case_bounds(cfg)["momentum M"]
        assert bound <= np.iinfo(momentum).max
        mom = {k: rng.integers(-bound, bound + 1, v.shape).astype(momentum) for k, v in params.items()}
        mom[context.NAME][:, :2] = rng.choice(np.array([-bound, bound], momentum), mom[context.NAME][:, :2].shape)
    assert same_update(gpu, cfg, f, z_ref, z_gpu, params, mom)[0]
    assert context.update(params[context.NAME].copy(), cfg, es.z_threshold_q4(cfg, 2), *z_ref[context.NAME],
                          mom[context.NAME].copy() if mom else None) > 0  # table weights moved, and were compared


@pytest.mark.parametrize("credit", ["reads", "graded"])
def test_mirrors_fitness_and_sums_match(backends, credit):
    """With context mirrors: population_fitness's log-likelihoods (members, 2, T), each member's then its
    mirror's, its window fitnesses (the sums of both) and the carried state equal the reference's; then
    context_credit and context_sums with the mirrored differences (context.byte_differences: the input
    entries credited by member plus mirror, the logit entries by member minus mirror), from that window
    and at their worst case (4 x a byte's log-likelihood bound), and the step from them."""
    ref, gpu, _ = backends
    cfg = dataclasses.replace(MIRRORS, context_credit=credit).check()
    rng = np.random.default_rng(13)
    params = extreme_params(cfg, rng)
    params[context.NAME][:, ::3] = rng.choice(np.array([-127, 127], np.int8), params[context.NAME][:, ::3].shape)
    tokens = rng.integers(0, 256, (cfg.pairs, cfg.window + 1)).astype(np.uint8)
    tokens[1, 2] = 0
    tokens[2, :] = tokens[2, 0]
    state = table_state(cfg, rng)
    noise = ref.make_noise(cfg, 3)
    outs = []
    for positions in (True, False):
        s_ref, s_gpu = state.copy(), state.copy()
        want = ref.population_fitness(params, cfg, noise, tokens, s_ref, positions=positions)
        got = gpu.population_fitness(params, cfg, gpu.make_noise(cfg, 3), tokens, s_gpu, positions=positions)
        assert want.shape == got.shape and np.array_equal(want, got) and np.array_equal(s_ref, s_gpu), positions
        outs.append(got)
    ll, fitness = outs
    assert ll.shape == (cfg.population, 2, cfg.window) and not np.array_equal(ll[:, 0], ll[:, 1])
    assert np.array_equal(fitness, model.window_fitness(ll))
    f = rng.choice(np.array([-8, 8, 0], np.int32), cfg.pairs)
    reads = context.rows_read(cfg, tokens, state[0::2, cfg.layers])[0]
    bound = 2 * worst_case_bounds(cfg)["window log-likelihood"] // cfg.window  # a byte's mirrored difference
    assert bound == 4 * 256 * 64
    extreme = rng.choice(np.array([-bound, bound, 0, 1, -1]), (cfg.pairs, 2, cfg.window))
    for local in (context.byte_differences(ll), extreme):
        z_ref, z_gpu = es.update_sums(cfg, noise, f, reads, local), gpu.update_sums(cfg, noise, f, reads, local)
        assert all(same(z_ref[k], z_gpu[k]) for k in z_ref)
        mom = {k: rng.integers(-999, 1000, v.shape).astype(np.int32) for k, v in params.items()}
        assert same_update(gpu, cfg, f, z_ref, z_gpu, params, mom)[0]


def test_table_update_without_signal_moves_nothing(backends):
    """Every f = 0: no row is listed, so the table and its momentum stay as they are; the dense
    tensors' momentum decays as the reference's does."""
    ref, gpu, _ = backends
    cfg = TABLES[1]
    rng = np.random.default_rng(12)
    f = np.zeros(cfg.pairs, np.int32)
    reads = gpu.rows_read(cfg, rng.integers(0, 256, (cfg.pairs, cfg.window + 1)), table_state(cfg, rng)[0::2, cfg.layers])[0]
    z_gpu = gpu.update_sums(cfg, gpu.make_noise(cfg, 1), f, reads)
    assert [np.asarray(a).shape for a in z_gpu[context.NAME]] == [(0, 2), (0, cfg.width), (0, 1)]
    params = extreme_params(cfg, rng)
    mom = {k: rng.integers(-999, 1000, v.shape).astype(np.int32) for k, v in params.items()}
    p_ref, p_gpu, m_ref, m_gpu = ({k: v.copy() for k, v in d.items()} for d in (params, params, mom, mom))
    assert ref.update(p_ref, cfg, 2, f, ref.update_sums(cfg, ref.make_noise(cfg, 1), f, reads), m_ref) == 0
    assert gpu.update(p_gpu, cfg, 2, f, z_gpu, m_gpu) == 0
    assert all(np.array_equal(p_gpu[k], params[k]) and np.array_equal(m_ref[k], m_gpu[k]) for k in params)
    assert np.array_equal(m_gpu[context.NAME], mom[context.NAME]) and not np.array_equal(m_gpu["head"], mom["head"])
