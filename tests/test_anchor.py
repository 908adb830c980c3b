"""Anchored Weight Decay: the integer pull toward the anchor (anchor.pull), and runs that use it."""

import dataclasses
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intlm import anchor, model, train
from intlm.config import Config
from intlm.errors import IntlmError
from intlm.run import ANCHOR_PREFIX, Run, load_run

from conftest import same_bytes_three_ways, tiny_config


def random_weights(cfg, seed, spread=127):
    rng = np.random.default_rng(seed)
    return {name: rng.integers(-spread, spread + 1, p.shape).astype(np.int8) for name, p in model.init_params(cfg).items()}


@settings(max_examples=60, deadline=None)
@given(k=st.integers(1, 16), step=st.integers(0, 2 ** 32), seed=st.integers(0, 2 ** 40), data_seed=st.integers(0, 2 ** 32))
def test_the_pull_never_crosses_or_overshoots_the_anchor(k, step, seed, data_seed):
    """Every weight ends on the same side of its anchor as it started, at its distance or one
    closer; a weight on its anchor stays; the count returned is the weights that moved."""
    cfg = tiny_config(anchor_decay=k, seed=seed % (1 << 63))
    params, anchors = random_weights(cfg, data_seed), random_weights(cfg, data_seed + 1)
    before = {name: p.astype(np.int64) - anchors[name] for name, p in params.items()}
    pulled = anchor.pull(params, anchors, cfg, step)
    changed = 0
    for name, d0 in before.items():
        assert params[name].dtype == np.int8
        d1 = params[name].astype(np.int64) - anchors[name]
        assert np.all((np.abs(d1) == np.abs(d0)) | (np.abs(d1) == np.abs(d0) - 1))
        assert np.all((np.sign(d1) == np.sign(d0)) | (d1 == 0))
        assert np.all(d1[d0 == 0] == 0)
        changed += int(np.count_nonzero(d1 != d0))
    assert pulled == changed


@settings(max_examples=20, deadline=None)
@given(step=st.integers(0, 2 ** 32), data_seed=st.integers(0, 2 ** 32))
def test_the_pull_is_off_at_zero(step, data_seed):
    cfg = tiny_config(anchor_decay=0)
    params, anchors = random_weights(cfg, data_seed), random_weights(cfg, data_seed + 1)
    before = {name: p.copy() for name, p in params.items()}
    assert anchor.pull(params, anchors, cfg, step) == 0
    assert all(np.array_equal(params[name], before[name]) for name in params)


@pytest.mark.parametrize("k,distance", [(3, 1), (3, 3), (3, 8), (3, 20), (6, 5), (1, 1)])
def test_the_pull_rate_is_the_distance_over_two_to_the_k(k, distance):
    """Weights all at distance d (both sides) are pulled at rate min(d, 2**K) / 2**K per step, and
    different steps pull different weights."""
    cfg = tiny_config(anchor_decay=k)
    anchors = {name: np.zeros(p.shape, np.int8) for name, p in model.init_params(cfg).items()}
    total, count, sets = 0, 0, []
    for step in range(8):
        rng = np.random.default_rng(step)
        params = {name: (rng.choice([-1, 1], a.shape) * distance).astype(np.int8) for name, a in anchors.items()}
        count += anchor.pull(params, anchors, cfg, step)
        total += sum(p.size for p in params.values())
        sets.append(np.concatenate([np.abs(p).reshape(-1) for p in params.values()]) < distance)
    expected = min(distance, 2 ** k) / 2 ** k
    assert count / total == pytest.approx(expected, abs=0.02)
    if 0 < expected < 1:
        assert not np.array_equal(sets[0], sets[1])


def test_the_pull_tethers_a_random_walk():
    """Weights moved +-1 at random, half of them each step (an update with no signal at alpha 0.5),
    wander about sqrt(steps) from where they started; pulled at K = 2 they stay within a few steps,
    and a larger K holds them less."""
    steps, spread = 300, {}
    for k in (0, 2, 5):
        cfg = tiny_config(anchor_decay=k)
        anchors = {name: np.zeros(p.shape, np.int8) for name, p in model.init_params(cfg).items()}
        params = {name: a.copy() for name, a in anchors.items()}
        rng = np.random.default_rng(0)
        for step in range(steps):
            for name, p in params.items():
                move = rng.choice([-1, 0, 0, 1], p.shape)
                p[...] = np.clip(p.astype(np.int64) + move, -127, 127)
            anchor.pull(params, anchors, cfg, step)
        spread[k] = np.mean(np.concatenate([np.abs(p.astype(np.int64)).reshape(-1) for p in params.values()]))
    assert spread[0] > 8 and spread[2] < 2 and spread[2] < spread[5] < spread[0] / 2, spread


def test_config_json_leaves_out_the_decay_while_it_is_off():
    """A run without Anchored Weight Decay writes the config it always did (so its checkpoint bytes
    are unchanged), and a config written before the field existed reads as off."""
    assert "anchor_decay" not in Config().to_json()
    assert Config(anchor_decay=3).to_json()["anchor_decay"] == 3
    assert Config.from_json(Config().to_json()).anchor_decay == 0
    assert Config.from_json(Config(anchor_decay=5).to_json()) == Config(anchor_decay=5)
    with pytest.raises(IntlmError, match="anchor decay"):
        Config(anchor_decay=17).check()
    with pytest.raises(IntlmError, match="anchor decay"):
        Config(anchor_decay=-1).check()


CFG = dict(population=16, window=4, mlp_ratio=2, alpha_q16=65536, anchor_decay=1)


def run_pretrain(corpus, run_dir, steps, **kw):
    return train.pretrain(corpus, tiny_config(**CFG), run_dir, steps=steps, progress=False, save_seconds=0, **kw)


def test_a_run_with_decay_is_the_same_on_both_backends_and_across_resume(corpus, tmp_path):
    """The pull is one NumPy implementation after each backend's update: the NumPy and Numba runs
    write identical checkpoints, a resumed run equals an uninterrupted one, the checkpoint holds the
    anchor (a fresh run's: its initial weights), and the log counts the pulled weights."""
    run, attrs = load_run(same_bytes_three_ways(tmp_path, lambda out, steps, backend, resume: run_pretrain(
        corpus, out, steps, backend=backend, resume=resume), 4))
    assert attrs["config"]["anchor_decay"] == 1
    initial = model.init_params(run.cfg)
    assert all(np.array_equal(run.anchor[name], initial[name]) for name in initial)
    assert any(not np.array_equal(run.params[name], initial[name]) for name in initial)
    records = [json.loads(line) for line in (tmp_path / "numba" / "log.jsonl").read_text().splitlines()]
    assert all(r["pulled"] > 0 for r in records[1:-1])


def test_the_decay_pulls_a_run_back_toward_its_start(corpus):
    """The same steps with and without the pull: with it, the weights end nearer their start."""
    distance = {}
    for k in (0, 1):
        cfg = dataclasses.replace(tiny_config(**CFG), anchor_decay=k)
        run = Run.fresh(cfg)
        start = {name: p.copy() for name, p in run.params.items()}
        for _ in range(6):
            train.train_step(run, corpus.train, train.get_backend("numpy"))
        distance[k] = sum(int(np.abs(run.params[n].astype(np.int64) - start[n]).sum()) for n in start)
    assert 0 < distance[1] < distance[0] * 0.8, distance


def test_a_checkpoint_without_its_anchor_is_refused(corpus, tmp_path):
    run = Run.fresh(tiny_config(**CFG))
    del run.anchor["head"]
    run.save(tmp_path, {"train_sha256_16": "0"})
    with pytest.raises(IntlmError, match=f"array '{ANCHOR_PREFIX}head'"):
        load_run(tmp_path)
