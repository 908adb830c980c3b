"""The optimisers other than EGGROLL (intlm/optimizers): NumPy reference == Numba bit for bit, resume ==
uninterrupted, the optimiser held to its checkpoint, and properties of each integer state update."""

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from conftest import run_main, tiny_config
from intlm import checkpoint, optimizers
from intlm.arith import div_round
from intlm.backends import get
from intlm.config import INT64_MAX, RANK_LEVELS, Config, parameter_count, worst_case_bounds
from intlm.errors import IntlmError
from intlm.model import init_params
from intlm.noise import NOISE_MAX
from intlm.optimizers import antithetic, cem, ranked, sepcma, spsa
from intlm.params import tensors
from intlm.optimizers.units import LOG_SCALE_MAX, MEAN_MAX, PATH_MAX, RANK_WEIGHT_ONE, SCALE_MAX, SCALE_MIN
from intlm.run import Run, load_run, resume_or_fresh

OTHERS = ("openes", "spsa", "spsa-stochastic", "sepcma", "sepcma-damped", "cem")  # optimiser[-variant]
SETTINGS = {  # tiny, and each exercising its optimiser's own settings
    "openes": dict(population=6, momentum_shift=2, fitness="rank"),
    "spsa": dict(population=4, step_shift=3, fitness="rank"),
    "spsa-stochastic": dict(population=4, step_shift=3, fitness="rank", spsa_rounding="stochastic"),
    "sepcma": dict(population=6, shared_rows=2),
    "sepcma-damped": dict(population=6, shared_rows=2, sepcma_damping=4),
    "cem": dict(population=6, shared_rows=2, elite_shift=1, step_shift=1),
}
DATA = (np.arange(3000, dtype=np.int64) * 7919 % 251 + 1).astype(np.uint8)
DATA[::53] = 0


def config(name, **changes):
    return tiny_config(optimizer=name.split("-")[0], window=3, sigma_shift=2, **{**SETTINGS[name], **changes})


def trained(cfg, backend, steps, run=None):
    run = run or Run.fresh(cfg)
    opt = optimizers.get(cfg.optimizer)
    for _ in range(steps):
        opt.step(run, DATA, get(backend))
    return run


@pytest.mark.parametrize("name", OTHERS)
def test_numba_equals_the_reference(name):
    cfg = config(name)
    ref, fast = trained(cfg, "numpy", 3), trained(cfg, "numba", 3)
    assert checkpoint.content_hash(ref.arrays(), {}) == checkpoint.content_hash(fast.arrays(), {})
    assert any(not np.array_equal(p, q) for p, q in zip(ref.params.values(), init_params(cfg).values()))


@pytest.mark.parametrize("name", OTHERS)
def test_resume_equals_uninterrupted(name, tmp_path):
    cfg = config(name)
    straight = trained(cfg, "numpy", 4)
    half = trained(cfg, "numpy", 2)
    half.save(tmp_path, {"train_sha256_16": "0"})
    resumed, _ = load_run(tmp_path)
    assert resumed.optimizer_state.keys() == straight.optimizer_state.keys()
    trained(cfg, "numpy", 2, resumed)
    assert checkpoint.content_hash(resumed.arrays(), {}) == checkpoint.content_hash(straight.arrays(), {})


def test_resume_refuses_another_optimizer(tmp_path):
    Run.fresh(config("cem")).save(tmp_path, {"train_sha256_16": "0"})
    with pytest.raises(IntlmError, match="--optimizer cem, not sepcma"):
        resume_or_fresh(tmp_path, config("sepcma"), resume=True, typed={"optimizer"})


def test_cli_resume_with_another_optimizer_is_one_error_line(monkeypatch, capsys, text_folder, tmp_path):
    common = ("--width", "16", "--mlp-ratio", "1", "--population", "4", "--window", "2", "--sample-every", "0",
              "--context-bits", "8", "--backend", "numpy")  # the default's tables, small: full-rank spsa updates every row
    code, _, _ = run_main(monkeypatch, capsys, "pretrain", text_folder, "--out", tmp_path, "--steps", "1",
                          "--optimizer", "spsa", *common)
    assert code == 0
    code, _, err = run_main(monkeypatch, capsys, "pretrain", text_folder, "--out", tmp_path, "--steps", "2",
                            "--resume", "--optimizer", "openes", *common)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: --resume: this run was trained with --optimizer spsa")


def test_spsa_rounding_is_written_for_carry_runs_only_and_old_spsa_runs_read_as_stochastic():
    carry, stochastic = config("spsa"), config("spsa-stochastic")
    assert carry.spsa_rounding == "carry" and carry.to_json()["spsa_rounding"] == "carry"
    assert "spsa_rounding" not in stochastic.to_json() and "spsa_rounding" not in config("cem").to_json()
    for cfg in (carry, stochastic, config("cem")):
        assert Config.from_json(cfg.to_json()) == cfg
    with pytest.raises(IntlmError, match="--spsa-rounding is spsa's"):
        dataclasses.replace(config("cem"), spsa_rounding="stochastic").check()


def test_sepcma_damping_is_written_when_set_and_is_sepcma_only():
    """Configs written before the setting existed read as d_sigma = 1, so their checkpoints keep their bytes."""
    damped, plain = config("sepcma-damped"), config("sepcma")
    assert damped.to_json()["sepcma_damping"] == 4 and "sepcma_damping" not in plain.to_json()
    assert Config.from_json(damped.to_json()) == damped and Config.from_json(plain.to_json()) == plain
    with pytest.raises(IntlmError, match="--sepcma-damping is sepcma's"):
        dataclasses.replace(config("cem"), sepcma_damping=2).check()
    with pytest.raises(IntlmError, match="sepcma damping must be"):
        dataclasses.replace(plain, sepcma_damping=0).check()


def test_anchor_decay_is_eggroll_only():
    """The other optimisers derive the weights from their own mean, which a pull of the int8
    weights would not move: Anchored Weight Decay with them is refused."""
    with pytest.raises(IntlmError, match="anchor-decay"):
        dataclasses.replace(config("cem"), anchor_decay=4).check()
    tiny_config(anchor_decay=4).check()


def test_evolve_from_another_optimizers_checkpoint_trains_with_eggroll(monkeypatch, capsys, text_folder, tmp_path):
    """intlm evolve's update is EGGROLL's: a run started from an spsa checkpoint records eggroll."""
    common = ("--population", "4", "--sample-every", "0", "--backend", "numpy")
    code, _, err = run_main(monkeypatch, capsys, "pretrain", text_folder, "--out", tmp_path / "base", "--steps", "1",
                            "--width", "16", "--mlp-ratio", "1", "--window", "2", "--context-bits", "8", "--optimizer",
                            "spsa", *common)
    assert code == 0, err
    code, _, err = run_main(monkeypatch, capsys, "evolve", "--objective", "intlm.objectives:lipogram", "--init",
                            tmp_path / "base", "--out", tmp_path / "evolved", "--steps", "1", "--length", "4", *common)
    assert code == 0, err
    assert load_run(tmp_path / "evolved")[0].cfg.optimizer == "eggroll"


def test_a_damaged_optimizer_state_is_refused(tmp_path):
    run = Run.fresh(config("sepcma"))
    run.optimizer_state["path.head"] = run.optimizer_state["path.head"][:3]
    run.save(tmp_path, {"train_sha256_16": "0"})
    with pytest.raises(IntlmError, match="optimizer.path.head"):
        load_run(tmp_path)


# ------------------------------------------------------------------ properties of the integer updates

int8s = st.integers(-127, 127)


@given(st.lists(st.tuples(int8s, st.integers(-NOISE_MAX, NOISE_MAX)), min_size=1, max_size=40),
       st.sampled_from([1, -1]))
def test_in_place_perturbation_is_undone_exactly(pairs, sign):
    w = np.array([p[0] for p in pairs], np.int8)
    delta = sign * np.array([p[1] for p in pairs], np.int32)
    before = w.copy()
    kept = antithetic.add_clipped(w, delta)
    assert np.array_equal(w, np.clip(before.astype(np.int32) + delta, -127, 127))
    antithetic.undo_add(w, delta, kept)
    assert np.array_equal(w, before)


@given(st.integers(-(1 << 20), 1 << 20), st.integers(0, 12))
def test_stochastic_shift_is_unbiased_and_within_one(x, k):
    steps = [int(spsa.stochastic_shift(x, u, k)) for u in range(1 << k)]
    assert sum(steps) == x  # mean over uniform u is exactly x / 2**k
    assert set(steps) <= {x >> k, (x >> k) + 1}


@given(st.integers(-(1 << 20), 1 << 20), st.integers(0, 16), st.data())
def test_carry_shift_keeps_the_exact_sum_and_a_residual_below_one_unit(x, k, data):
    half = (1 << k) >> 1
    residual = data.draw(st.integers(-half, max(half - 1, 0)))
    move, rest = spsa.carry_shift(x, residual, k)
    assert (move << k) + rest == residual + x  # nothing lost: error feedback
    assert -half <= rest <= max(half - 1, 0)  # fits int16 for every k Config.check accepts
    assert move == spsa.carry_shift(x + residual, 0, k)[0]


@settings(max_examples=20)
@given(st.integers(0, 16), st.sampled_from(["sign", "rank"]), st.integers(0, 1 << 20))
def test_spsa_carried_step_stays_within_its_worst_case(k, fitness, seed):
    """The real update (spsa.apply_step, on the hash's noise, at the largest fitness every step):
    each weight's carried step residual + f * e stays within the worst case config.py proves, and
    the residual kept is in [-2**(k-1), 2**(k-1)), so its int16 never wraps."""
    cfg = dataclasses.replace(config("spsa"), spsa_rounding="carry", step_shift=k, fitness=fitness, seed=seed).check()
    f_max = 1 if fitness == "sign" else RANK_LEVELS
    run = Run.fresh(cfg)
    be, half = get("numpy"), (1 << k) >> 1
    bound = worst_case_bounds(cfg)["spsa carried step"]
    for step in range(6):
        f = np.full(cfg.pairs, f_max if step % 3 else -f_max, np.int32)
        for t in tensors(cfg):
            carried = run.optimizer_state[spsa.RESIDUAL + t.name].astype(np.int64)
            assert np.abs(carried + f_max * be.dense_noise(cfg, t, step, 0).astype(np.int64)).max() <= bound
        spsa.apply_step(run.params, cfg, be, step, f, run.optimizer_state)
        for residual in run.optimizer_state.values():
            assert residual.dtype == np.int16 and residual.min() >= -half and residual.max() <= max(half - 1, 0)


def test_carry_rounding_moves_by_the_mean_step_without_a_random_walk():
    """Steps of +-1/8 unit, each alone rounding to 0: the carried weight follows their exact sum,
    never further from it than half a unit."""
    k, signs = 3, np.where(np.arange(4096) % 3 == 0, -1, 1)  # mean step +1/24 unit
    residual, weight, total = 0, 0, 0
    for s in signs:
        move, residual = spsa.carry_shift(int(s), residual, k)
        weight += move
        total += int(s)
        assert abs((weight << k) - total) <= 1 << (k - 1)
    assert weight == (total + 4) >> 3


@given(st.integers(0, (1 << 62) - 1))
def test_isqrt_array_is_exact(x):
    assert int(cem.isqrt_array(np.array([x]))[0]) == math.isqrt(x)


@settings(max_examples=40)
@given(st.integers(1, 8), st.integers(0, 16), st.data())
def test_cem_refit_stays_in_bounds_and_flips_with_the_noise(mu, k, data):
    n = 6
    z = np.array(data.draw(st.lists(st.lists(st.integers(-NOISE_MAX, NOISE_MAX), min_size=n, max_size=n),
                                    min_size=mu, max_size=mu)), np.int64)
    mean0 = np.array(data.draw(st.lists(st.integers(-MEAN_MAX, MEAN_MAX), min_size=n, max_size=n)), np.int32)
    spread0 = np.array(data.draw(st.lists(st.integers(SCALE_MIN, SCALE_MAX), min_size=n, max_size=n)), np.int32)
    results = []
    for sign in (1, -1):
        mean, spread = mean0.copy(), spread0.copy()
        d = [ranked.offset(sign * zk, spread0) for zk in z]
        cem.refit(mean, spread, sum(d), sum(x * x for x in d), mu, k)
        assert np.all(np.abs(mean) <= MEAN_MAX) and np.all((spread >= SCALE_MIN) & (spread <= SCALE_MAX))
        results.append((mean.astype(np.int64) - mean0, spread))
    (step_plus, spread_plus), (step_minus, spread_minus) = results
    inside = np.abs(mean0.astype(np.int64) + step_plus) < MEAN_MAX  # the clamp is not symmetric about mean0
    inside &= np.abs(mean0.astype(np.int64) + step_minus) < MEAN_MAX
    assert np.array_equal(step_plus[inside], -step_minus[inside]) and np.array_equal(spread_plus, spread_minus)


@settings(max_examples=40)
@given(st.sampled_from([2, 4, 16, 64, 1 << 20]), st.data())
def test_sepcma_update_stays_in_bounds_and_flips_with_the_noise(population, data):
    """Worst-case inputs included (z at +-78 on every member, scale at its maximum): the sums are
    exact (compared with Python integers) and every state stays in its range."""
    c = sepcma.constants(Config(population=population, optimizer="sepcma").check())
    mu = min(c.mu, 6)
    n = 5
    zs = st.integers(-NOISE_MAX, NOISE_MAX) | st.sampled_from([-NOISE_MAX, NOISE_MAX])
    z = np.array(data.draw(st.lists(st.lists(zs, min_size=n, max_size=n), min_size=mu, max_size=mu)), np.int64)
    scale = np.array(data.draw(st.lists(st.integers(SCALE_MIN, SCALE_MAX), min_size=n, max_size=n)), np.int64)
    path0 = np.array(data.draw(st.lists(st.integers(-PATH_MAX, PATH_MAX), min_size=n, max_size=n)), np.int32)
    log0 = np.array(data.draw(st.lists(st.integers(-LOG_SCALE_MAX, LOG_SCALE_MAX), min_size=n, max_size=n)), np.int32)
    weights = c.weights[:mu]
    out = []
    for sign in (1, -1):
        y = sum(w * ranked.offset(sign * zk, scale) for w, zk in zip(weights, z))
        zw = sum(w * sign * zk for w, zk in zip(weights, z))
        zz = sum(w * zk * zk for w, zk in zip(weights, z))
        exact = [sum(w * int(v) for w, v in zip(weights, col)) for col in (sign * z).T]
        assert [int(v) for v in zw] == exact  # no wraparound
        mean, path, log_scale = np.zeros(n, np.int32), path0.copy(), log0.copy()
        sepcma.update_tensor(c, mean, path, log_scale, (np.asarray(y), np.asarray(zw), np.asarray(zz)))
        assert np.all(np.abs(mean) <= MEAN_MAX) and np.all(np.abs(path) <= PATH_MAX)
        assert np.all(np.abs(log_scale) <= LOG_SCALE_MAX)
        out.append((mean, path, log_scale))
    (m1, p1, l1), (m2, p2, l2) = out
    assert np.array_equal(m1, -m2) and np.array_equal(l1, l2)
    if not np.any(path0):
        assert np.array_equal(p1, -p2)
    assert sum(c.weights) == RANK_WEIGHT_ONE and 0 <= c.c_mu <= 1 << 15 and c.c_sigma >= 1


@given(st.integers(0, LOG_SCALE_MAX), st.integers(0, 1 << 40))
def test_global_step_size_stays_in_range_and_grows_with_a_long_path(log_sigma, norm):
    c = sepcma.constants(Config(optimizer="sepcma", population=16).check())
    new = sepcma.adapt_global(c, log_sigma, norm)
    assert 0 <= new <= LOG_SCALE_MAX
    expected = c.n << 16  # |path|**2 of a path of independent N(0, 1) entries
    assert new >= log_sigma if norm > expected else new <= log_sigma


@given(st.integers(0, LOG_SCALE_MAX), st.integers(0, 1 << 40), st.integers(2, 1024))
def test_damping_divides_the_global_step_size_change(log_sigma, norm, damping):
    """d_sigma = D moves the log by the undamped change / D, rounded: never further, never the other way."""
    cfg = Config(optimizer="sepcma", population=16).check()
    plain = sepcma.constants(cfg)
    damped = sepcma.constants(dataclasses.replace(cfg, sepcma_damping=damping).check())
    mid = LOG_SCALE_MAX // 2  # away from the clip, the raw changes
    full, part = sepcma.adapt_global(plain, mid, norm) - mid, sepcma.adapt_global(damped, mid, norm) - mid
    assert abs(part) <= abs(full) and part * full >= 0
    assert abs(full - damping * part) <= (damping + 1) // 2  # each rounding is within half a unit
    assert 0 <= sepcma.adapt_global(damped, log_sigma, norm) <= LOG_SCALE_MAX


@given(st.integers(0, LOG_SCALE_MAX))
def test_step_size_is_a_power_of_two_of_its_log(log_scale):
    s = int(sepcma.step_size(np.array([log_scale]))[0])
    assert SCALE_MIN <= s <= SCALE_MAX
    exact = 2 ** (log_scale / 65536)
    assert abs(s - exact) <= 1 + exact / 256


@settings(max_examples=30)
@given(st.sampled_from(optimizers.NAMES), st.integers(1, 16).map(lambda k: 16 * k), st.integers(1, 4),
       st.integers(1, 30).map(lambda k: 1 << k), st.integers(1, 8))
def test_every_accepted_setting_keeps_the_optimizer_sums_in_int64(name, width, layers, population, elite_shift):
    cfg = dataclasses.replace(Config(), optimizer=name, width=width, layers=layers, population=population,
                              elite_shift=elite_shift, rank=1, mlp_ratio=1)
    bounds = worst_case_bounds(cfg)
    for what in ("sepcma weighted sums", "cem elite sums", "sepcma path norm"):
        assert bounds[what] <= INT64_MAX
    assert bounds["member offset"] < 1 << 31
    assert parameter_count(cfg) == sum(p.size for p in init_params(cfg).values())


def test_openes_update_sums_flip_with_the_fitness():
    from intlm.optimizers import openes

    cfg = config("openes")
    f = np.array([1, -3, 0], np.int32)
    plus, minus = (openes.update_sums(cfg, get("numpy"), 5, s * f) for s in (1, -1))
    for name in plus:
        assert np.array_equal(plus[name], -minus[name]) and np.any(plus[name])


def test_div_round_is_symmetric():  # the flips above rest on it
    x = np.arange(-40, 41)
    assert np.array_equal(div_round(x, 4), -div_round(-x, 4))
