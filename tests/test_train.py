"""Tests of the training loop: bit-exact determinism, resume, backend and thread-count independence,
and that evaluation falls when the model learns."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intlm import train
from intlm.data import Corpus
from intlm.errors import IntlmError

from conftest import tiny_config

CFG = dict(population=8, window=4, layers=1, mlp_ratio=2, alpha_q16=65536)


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.integers(-127, 127), min_size=2, max_size=64).filter(lambda v: len(v) % 2 == 0),
       layers=st.integers(1, 3))
def test_share_pair_state_is_the_rounded_mean(values, layers):
    """Both members of a pair get floor((a + b + 1) / 2) of their states, element by element, in
    int8; the extremes (+-127 twice) stay in range and pairs do not mix."""
    hidden = np.array(values * layers, dtype=np.int8).reshape(len(values), layers, 1)
    before = hidden.astype(np.int64)
    train.share_pair_state(hidden)
    want = (before[0::2] + before[1::2] + 1) // 2
    assert hidden.dtype == np.int8
    assert np.array_equal(hidden[0::2], want) and np.array_equal(hidden[1::2], want)


def files_of(folder: Path) -> dict:
    """Every file under ``folder`` by relative path, with its bytes."""
    out = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    assert out
    return out


def run_pretrain(corpus, run_dir, steps, **kw):
    cfg = tiny_config(**CFG)
    return train.pretrain(corpus, cfg, run_dir, steps=steps, progress=False, save_seconds=0, **kw)


@pytest.fixture(scope="module")
def reference_run(corpus, tmp_path_factory):
    """4 steps with the Numba backend: the run every other run is compared with."""
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    run = run_pretrain(corpus, run_dir, 4, backend="numba")
    return run_dir, run


def test_pretrain_writes_checkpoints_and_log(reference_run):
    """save_seconds=0 checkpoints every step; the log has one record per step plus a final one."""
    run_dir, run = reference_run
    assert run.step == 4
    assert sorted(p.name for p in run_dir.glob("step-*")) == [f"step-{i:08d}" for i in range(1, 5)]
    lines = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4, 4]
    assert lines[-1]["final"] is True and 0 < lines[-1]["val_bpb"] < 20
    loaded, attrs = train.load_run(run_dir)
    assert loaded.step == 4 and loaded.cfg == run.cfg
    for k in run.params:
        assert np.array_equal(loaded.params[k], run.params[k])
    assert np.array_equal(loaded.hidden, run.hidden)


def test_pretrain_twice_gives_identical_bytes(corpus, reference_run, tmp_path):
    """The same config and corpus give byte-identical checkpoint files (every file under step-4)."""
    ref_dir, _ = reference_run
    run_pretrain(corpus, tmp_path / "again", 4, backend="numba")
    assert files_of(tmp_path / "again" / "step-00000004") == files_of(ref_dir / "step-00000004")
    # and the earlier checkpoints too
    assert files_of(tmp_path / "again" / "step-00000002") == files_of(ref_dir / "step-00000002")


def test_resume_equals_uninterrupted(corpus, reference_run, tmp_path):
    """2 steps, then resume to 4, equals 4 steps in one go, byte for byte."""
    ref_dir, _ = reference_run
    run_dir = tmp_path / "resumed"
    run_pretrain(corpus, run_dir, 2, backend="numba")
    assert not (run_dir / "step-00000004").exists()
    run = run_pretrain(corpus, run_dir, 4, backend="numba", resume=True)
    assert run.step == 4
    assert files_of(run_dir / "step-00000004") == files_of(ref_dir / "step-00000004")


def test_numpy_backend_gives_identical_checkpoint(corpus, reference_run, tmp_path):
    """The NumPy reference and the Numba backend write byte-identical checkpoints."""
    ref_dir, _ = reference_run
    run_pretrain(corpus, tmp_path / "np", 4, backend="numpy")
    assert files_of(tmp_path / "np" / "step-00000004") == files_of(ref_dir / "step-00000004")


def test_single_thread_subprocess_gives_identical_checkpoint(corpus, reference_run, tmp_path):
    """A run in a subprocess with NUMBA_NUM_THREADS=1 equals the in-process multi-threaded one."""
    import numba

    ref_dir, _ = reference_run
    out = tmp_path / "one-thread"
    code = (
        "import sys; from intlm import data, train, config\n"
        "c = data.open_store(sys.argv[1])\n"
        "cfg = config.Config.from_json(__import__('json').loads(sys.argv[3])).check()\n"
        "train.pretrain(c, cfg, sys.argv[2], steps=4, progress=False, save_seconds=0, backend='numba')\n"
        "import numba; print(numba.get_num_threads())\n"
    )
    env = {**os.environ, "NUMBA_NUM_THREADS": "1"}
    cfg_json = json.dumps(tiny_config(**CFG).to_json())
    done = subprocess.run([sys.executable, "-c", code, str(corpus.path), str(out), cfg_json],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "1"
    if numba.get_num_threads() < 2:
        pytest.skip("this machine runs Numba on one thread only: nothing to compare")
    assert files_of(out / "step-00000004") == files_of(ref_dir / "step-00000004")


def test_resume_refuses_other_settings_and_corpus(corpus, reference_run, tmp_path):
    """Resuming with a different config or a different corpus is refused, and a fresh run into a
    folder with checkpoints is refused too."""
    import shutil

    ref_dir, _ = reference_run
    run_dir = tmp_path / "copy"
    shutil.copytree(ref_dir, run_dir)
    with pytest.raises(IntlmError, match="settings differ"):
        train.pretrain(corpus, tiny_config(**{**CFG, "window": 5}), run_dir, steps=5, progress=False,
                       resume=True, backend="numba")
    other = Corpus(train=corpus.train[:-10], val=corpus.val, meta={}, path=None)
    with pytest.raises(IntlmError, match="corpus differs"):
        train.pretrain(other, tiny_config(**CFG), run_dir, steps=5, progress=False, resume=True, backend="numba")
    with pytest.raises(IntlmError, match="already holds checkpoints"):
        run_pretrain(corpus, run_dir, 5, backend="numba")


def test_evaluate_untrained_near_8_bits_then_learns(numba_backend, numpy_backend):
    """An untrained model scores ~8 bits/byte (near-uniform); 20 steps on 'abcabc...' bring the
    validation figure far down (a model that learned the cycle needs ~0 bits)."""
    cycle = np.frombuffer(b"\0" + b"abc" * 4000, dtype=np.uint8)
    val = np.frombuffer(b"\0" + b"abc" * 400, dtype=np.uint8)
    cfg = tiny_config(population=256, window=8, mlp_ratio=1, alpha_q16=32768)
    run = train.Run.fresh(cfg)
    before = train.evaluate(run.params, cfg, val, numba_backend, streams=16)
    assert 7.5 < before < 8.5
    # the reference backend agrees exactly on the figure
    assert train.evaluate(run.params, cfg, val, numpy_backend, streams=16) == before
    for _ in range(20):
        train.train_step(run, cycle, numba_backend)
    after = train.evaluate(run.params, cfg, val, numba_backend, streams=16)
    assert after < 4.0, after


def test_evaluate_uses_every_prediction_once(numpy_backend):
    """With one stream, evaluate is the mean bits of every prediction of a direct forward over the
    data (the padding after the end is not scored)."""
    cfg = tiny_config()
    params = train.Run.fresh(cfg).params
    data = np.frombuffer(b"\0" + b"hello world, " * 30, dtype=np.uint8)
    got = train.evaluate(params, cfg, data, numpy_backend, streams=1)
    state = np.zeros((1, 1, cfg.width), dtype=np.int8)
    ll = numpy_backend.forward(params, cfg, data[None, :], state)
    assert got == pytest.approx(-ll.astype(np.int64).sum() / 256 / (len(data) - 1), abs=1e-12)


def test_resume_with_momentum_equals_uninterrupted(corpus, tmp_path):
    """With integer momentum the checkpoint carries M, so a resumed run still matches byte for byte."""
    cfg = tiny_config(**{**CFG, "momentum_shift": 2})
    train.pretrain(corpus, cfg, tmp_path / "whole", steps=4, progress=False, save_seconds=1e9, backend="numba")
    train.pretrain(corpus, cfg, tmp_path / "split", steps=2, progress=False, save_seconds=1e9, backend="numba")
    run = train.pretrain(corpus, cfg, tmp_path / "split", steps=4, progress=False, save_seconds=1e9,
                         backend="numba", resume=True)
    assert files_of(tmp_path / "split" / "step-00000004") == files_of(tmp_path / "whole" / "step-00000004")
    loaded, _ = train.load_run(tmp_path / "whole")
    assert set(loaded.momentum) == set(loaded.params)
    assert any(np.any(m) for m in loaded.momentum.values())
    for k in run.momentum:
        assert np.array_equal(run.momentum[k], loaded.momentum[k])


# Content hash of a run's arrays after 12 steps (graded fitness, rank 2, momentum), computed on the
# commit before the update's accumulators could widen to int64: settings that fit int32 keep their bits.
PINNED_ARRAYS_SHA256 = "918c4bbb137fe58d26c61d82ba4de3a31b9164848fb9d4268632f3069f2d9176"


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_arrays_equal_the_pinned_hash(backend):
    from intlm import checkpoint
    from intlm.backends import get

    cfg = tiny_config(population=32, window=8, rank=2, fitness="rank", momentum_shift=3, sigma_shift=3,
                      mlp_ratio=2)
    data = (np.arange(5000, dtype=np.int64) * 7919 % 251 + 1).astype(np.uint8)
    data[::97] = 0
    run = train.Run.fresh(cfg)
    for _ in range(12):
        train.train_step(run, data, get(backend))
    assert checkpoint.content_hash(run.arrays(), {}) == PINNED_ARRAYS_SHA256


def test_int64_momentum_round_trips(tmp_path):
    """A population whose momentum needs int64 saves and loads it as int64, values intact."""
    cfg = tiny_config(population=1 << 16, momentum_shift=3, fitness="rank")
    run = train.Run.fresh(cfg)
    assert all(m.dtype == np.int64 for m in run.momentum.values())
    run.momentum["head"].flat[:2] = [(1 << 40) + 3, -(1 << 40)]
    run.save(tmp_path, {"train_sha256_16": "0"})
    loaded, _ = train.load_run(tmp_path)
    for name, m in run.momentum.items():
        assert loaded.momentum[name].dtype == np.int64 and np.array_equal(loaded.momentum[name], m)
