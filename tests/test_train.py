"""Tests of the training loop: bit-exact determinism, resume, backend and thread-count independence,
and that evaluation falls when the model learns."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import unicodedata
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from intlm import es, train
from intlm.optimizers import eggroll
from intlm.data import Corpus
from intlm.errors import IntlmError, Stopped
from intlm.run import Run, load_run

from conftest import checkpoint_state, text_bytes, tiny_config
from conftest import random_params as conftest_random_params

CFG = dict(population=8, window=4, layers=1, mlp_ratio=2, alpha_q16=65536)


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.integers(-127, 127), min_size=2, max_size=64).filter(lambda v: len(v) % 2 == 0),
       layers=st.integers(1, 3))
def test_share_pair_state_is_the_rounded_mean(values, layers):
    """Both members of a pair get floor((a + b + 1) / 2) of their states, element by element, in
    int8; the extremes (+-127 twice) stay in range and pairs do not mix."""
    hidden = np.array(values * layers, dtype=np.int8).reshape(len(values), layers, 1)
    before = hidden.astype(np.int64)
    es.share_pair_state(hidden)
    want = (before[0::2] + before[1::2] + 1) // 2
    assert hidden.dtype == np.int8
    assert np.array_equal(hidden[0::2], want) and np.array_equal(hidden[1::2], want)


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
    loaded, attrs = load_run(run_dir)
    assert loaded.step == 4 and loaded.cfg == run.cfg
    for k in run.params:
        assert np.array_equal(loaded.params[k], run.params[k])
    assert np.array_equal(loaded.recurrent, run.recurrent)


def test_the_final_save_of_a_step_just_saved_reads_nothing_back(corpus, tmp_path, monkeypatch):
    """A run whose last periodic checkpoint is of its last step does not save that step again:
    checkpoint.save would read the checkpoint back to compare it, holding the state twice (the
    default run peaked at 1.37 GB so)."""
    from intlm import checkpoint

    reads = []
    monkeypatch.setattr(checkpoint, "_intact_hash", lambda path: reads.append(path))
    run = train.pretrain(corpus, tiny_config(), tmp_path / "r", steps=3, save_seconds=0.0, progress=False,
                         backend="numpy")
    assert reads == [] and run.step == 3
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path / "r")] == [f"step-{i:08d}" for i in (1, 2, 3)]


def test_pretrain_twice_gives_identical_bytes(corpus, reference_run, tmp_path):
    """The same config and corpus give byte-identical checkpoint files (every file under step-4)."""
    ref_dir, _ = reference_run
    run_pretrain(corpus, tmp_path / "again", 4, backend="numba")
    assert checkpoint_state(tmp_path / "again" / "step-00000004") == checkpoint_state(ref_dir / "step-00000004")
    # and the earlier checkpoints too
    assert checkpoint_state(tmp_path / "again" / "step-00000002") == checkpoint_state(ref_dir / "step-00000002")


def test_resume_equals_uninterrupted(corpus, reference_run, tmp_path):
    """2 steps, then resume to 4, equals 4 steps in one go, byte for byte."""
    ref_dir, _ = reference_run
    run_dir = tmp_path / "resumed"
    run_pretrain(corpus, run_dir, 2, backend="numba")
    assert not (run_dir / "step-00000004").exists()
    run = run_pretrain(corpus, run_dir, 4, backend="numba", resume=True)
    assert run.step == 4
    assert checkpoint_state(run_dir / "step-00000004") == checkpoint_state(ref_dir / "step-00000004")


def test_numpy_backend_gives_identical_checkpoint(corpus, reference_run, tmp_path):
    """The NumPy reference and the Numba backend write byte-identical checkpoints."""
    ref_dir, _ = reference_run
    run_pretrain(corpus, tmp_path / "np", 4, backend="numpy")
    assert checkpoint_state(tmp_path / "np" / "step-00000004") == checkpoint_state(ref_dir / "step-00000004")


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
    assert checkpoint_state(out / "step-00000004") == checkpoint_state(ref_dir / "step-00000004")


def test_resume_refuses_other_settings_and_corpus(corpus, reference_run, tmp_path):
    """Resuming with a different config or a different corpus is refused, and a fresh run into a
    folder with checkpoints is refused too."""
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
    run = Run.fresh(cfg)
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
    params = Run.fresh(cfg).params
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
    assert checkpoint_state(tmp_path / "split" / "step-00000004") == checkpoint_state(tmp_path / "whole" / "step-00000004")
    loaded, _ = load_run(tmp_path / "whole")
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
    run = Run.fresh(cfg)
    for _ in range(12):
        train.train_step(run, data, get(backend))
    assert checkpoint.content_hash(run.arrays(), {}) == PINNED_ARRAYS_SHA256


def test_int64_momentum_round_trips(tmp_path):
    """A population whose momentum needs int64 saves and loads it as int64, values intact."""
    cfg = tiny_config(population=1 << 16, momentum_shift=3, fitness="rank")
    run = Run.fresh(cfg)
    assert all(m.dtype == np.int64 for m in run.momentum.values())
    run.momentum["head"].flat[:2] = [(1 << 40) + 3, -(1 << 40)]
    run.save(tmp_path, {"train_sha256_16": "0"})
    loaded, _ = load_run(tmp_path)
    for name, m in run.momentum.items():
        assert loaded.momentum[name].dtype == np.int64 and np.array_equal(loaded.momentum[name], m)


# ---------------------------------------------------------------- what happens when things go wrong


def no_leftovers(run_dir: Path) -> list:
    """The run folder's hidden leftovers of interrupted writes (none expected)."""
    return [p.name for p in run_dir.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_resume_falls_back_to_the_newest_intact_checkpoint(corpus, reference_run, tmp_path, capsys):
    """Newest checkpoint damaged, the one before half-deleted: resume names the damaged one in one
    line, continues from step 2, rewrites steps 3 and 4, and ends equal to the uninterrupted run."""
    ref_dir, _ = reference_run
    run_dir = tmp_path / "copy"
    shutil.copytree(ref_dir, run_dir)
    next(p for p in (run_dir / "step-00000004" / "embed").rglob("*") if p.is_file() and p.name != "zarr.json").unlink()
    (run_dir / "step-00000003" / "zarr.json").unlink()
    run = run_pretrain(corpus, run_dir, 4, backend="numba", resume=True)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "step-00000004" in err[0] and "1 more" in err[0] and "step-00000002" in err[0]
    assert run.step == 4
    for step in (3, 4):
        name = f"step-{step:08d}"
        assert checkpoint_state(run_dir / name) == checkpoint_state(ref_dir / name)
    assert [json.loads(line)["step"] for line in (run_dir / "log.jsonl").read_text().splitlines()] == \
        [1, 2, 2, 3, 4, 4]  # records past step 2 dropped, then the resume marker


def test_resume_refuses_a_folder_without_checkpoints(corpus, tmp_path):
    """--resume on a mistyped --out is refused (nothing written); resume_or_start starts there."""
    cfg = tiny_config(**CFG)
    with pytest.raises(IntlmError, match="holds no checkpoint.*--resume-or-start"):
        train.pretrain(corpus, cfg, tmp_path / "typo", steps=1, progress=False, resume=True, backend="numpy")
    assert not (tmp_path / "typo").exists()
    run = train.pretrain(corpus, cfg, tmp_path / "typo", steps=1, progress=False, resume_or_start=True,
                         backend="numpy")
    assert run.step == 1 and (tmp_path / "typo" / "step-00000001").is_dir()


def test_checkpoint_names_the_corpus_by_absolute_path(corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(corpus.path.parent)
    relative = Corpus(train=corpus.train, val=corpus.val, meta=corpus.meta, path=Path(corpus.path.name))
    train.pretrain(relative, tiny_config(**CFG), tmp_path / "r", steps=1, progress=False, backend="numpy")
    assert load_run(tmp_path / "r")[1]["corpus"]["source"] == str(corpus.path.resolve())


def test_resume_repairs_the_log_and_continues_its_clock(corpus, tmp_path):
    """A log whose end was cut short (a crash, a full disk) and holds records past the checkpoint:
    resuming keeps the whole records up to the checkpoint's step, writes a marker carrying the
    checkpoint's training time, and the new records' elapsed_s continue from it."""
    cfg = tiny_config(**CFG)
    run_dir = tmp_path / "r"
    train.pretrain(corpus, cfg, run_dir, steps=3, progress=False, save_seconds=0, backend="numpy")
    log = run_dir / "log.jsonl"
    seconds = [json.loads(line) for line in log.read_text().splitlines()][-1]["elapsed_s"]  # the final record
    log.write_text(log.read_text() + '{"step": 4, "elapsed_s": 99.0}\n{"step": 5, "elap')
    train.pretrain(corpus, cfg, run_dir, steps=5, progress=False, save_seconds=0, backend="numpy", resume=True)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 3, 3, 4, 5, 5]
    assert records[4] == {"step": 3, "elapsed_s": seconds, "resumed": True}
    assert seconds < records[5]["elapsed_s"] < records[6]["elapsed_s"] <= records[7]["elapsed_s"]


def test_disk_full_during_a_log_write_is_repaired_on_resume(corpus, tmp_path, monkeypatch):
    """ENOSPC half-way through step 2's record: the run stops with the error, and the resumed run's
    log reads as one history (before, the resumed run appended onto the cut-short line)."""
    cfg = tiny_config(**CFG)
    run_dir = tmp_path / "r"
    real_open_log = train.open_log

    class FullDisk:
        def __init__(self, f):
            self.f = f

        def write(self, text):
            if json.loads(text)["step"] == 2:
                self.f.write(text[: len(text) // 2])
                self.f.flush()
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(text)

        def flush(self):
            self.f.flush()

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def full_open_log(*args, **kwargs):
        log, seconds = real_open_log(*args, **kwargs)
        return FullDisk(log), seconds

    monkeypatch.setattr(train, "open_log", full_open_log)
    with pytest.raises(OSError, match="No space"):
        train.pretrain(corpus, cfg, run_dir, steps=3, progress=False, save_seconds=0, backend="numpy")
    monkeypatch.setattr(train, "open_log", real_open_log)
    train.pretrain(corpus, cfg, run_dir, steps=3, progress=False, save_seconds=0, backend="numpy", resume=True)
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 1, 2, 3, 3] and records[1]["resumed"]
    assert no_leftovers(run_dir) == []


def test_a_second_process_is_refused_and_a_dead_holder_blocks_no_one(corpus, tmp_path):
    """While another process holds the run folder, pretrain refuses in one line naming its pid; once
    that process is killed (-9: it never unlocks), the folder is free."""
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom intlm.lock import run_lock\n"
         "with run_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(120)\n", str(run_dir)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(IntlmError, match=f"in use by process {holder.pid}"):
            run_pretrain(corpus, run_dir, 1, backend="numpy")
        assert not (run_dir / "step-00000001").exists()
    finally:
        holder.kill()
        holder.wait()
    assert run_pretrain(corpus, run_dir, 1, backend="numpy").step == 1


def signal_after_step(monkeypatch, at_step, signum):
    """Make train_step send this process ``signum`` right after step ``at_step``."""
    real = train.train_step

    def step_then_signal(run, *args, **kwargs):
        stats = real(run, *args, **kwargs)
        if run.step == at_step:
            os.kill(os.getpid(), signum)
        return stats

    monkeypatch.setattr(eggroll, "train_step", step_then_signal)  # the step the eggroll optimiser takes


def test_sigint_saves_after_the_current_step(corpus, tmp_path, monkeypatch):
    """SIGINT mid-run: the step finishes, a checkpoint of it is written (although the next periodic
    save is far off), Stopped names it, and the previous signal handlers are back."""
    signal_after_step(monkeypatch, 2, signal.SIGINT)
    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN when started in the background
    with pytest.raises(Stopped) as stopped:
        train.pretrain(corpus, tiny_config(**CFG), tmp_path / "r", steps=10, progress=False, save_seconds=1e9,
                       backend="numpy")
    assert stopped.value.signum == signal.SIGINT and stopped.value.path == tmp_path / "r" / "step-00000002"
    assert "SIGINT" in str(stopped.value) and str(stopped.value.path) in str(stopped.value)
    assert load_run(tmp_path / "r")[0].step == 2
    assert signal.getsignal(signal.SIGINT) is before


def test_a_second_signal_abandons_the_save_and_keeps_the_previous_checkpoint(corpus, tmp_path, monkeypatch):
    """SIGTERM after step 3, then another in the middle of writing step 3's checkpoint: the save is
    abandoned, step 2 stays the newest checkpoint, intact, and no temporary folder is left."""
    signal_after_step(monkeypatch, 3, signal.SIGTERM)
    real = zarr.Group.create_array

    def create_array(self, name, **kwargs):
        if "step-00000003" in str(self.store):
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, name, **kwargs)

    monkeypatch.setattr(zarr.Group, "create_array", create_array)
    run_dir = tmp_path / "r"
    with pytest.raises(Stopped) as stopped:
        train.pretrain(corpus, tiny_config(**CFG), run_dir, steps=10, progress=False, save_seconds=0,
                       backend="numpy")
    assert stopped.value.signum == signal.SIGTERM and stopped.value.path is None
    assert load_run(run_dir)[0].step == 2
    assert not (run_dir / "step-00000003").exists() and no_leftovers(run_dir) == []


def test_evaluate_in_blocks_gives_the_same_figure_in_bounded_memory(numba_backend):
    """Evaluating a block of bytes per stream at a time gives exactly the one-pass figure, and the
    memory it allocates is set by the block, not by the data (the one-pass index array alone took 8
    bytes per byte)."""
    cfg = tiny_config()
    params = Run.fresh(cfg).params
    data = np.frombuffer(b"\0" + text_bytes(300_000, seed=1), dtype=np.uint8)
    whole = train.evaluate(params, cfg, data, numba_backend, block=len(data))
    tracemalloc.start()
    try:
        blocked = train.evaluate(params, cfg, data, numba_backend, block=64)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert blocked == whole
    assert peak < len(data) // 2, peak


@settings(max_examples=30, deadline=None)
@given(data=st.binary(min_size=2, max_size=300), streams=st.integers(1, 8), block=st.integers(1, 80),
       max_bytes=st.sampled_from([0, 40]))
def test_evaluate_is_the_same_for_every_block_size(numpy_backend, data, streams, block, max_bytes):
    """The streams' integer state carried from block to block: any block size scores exactly the
    bytes, with exactly the states, of one pass over the whole chunk."""
    cfg = tiny_config()
    params = Run.fresh(cfg).params
    data = np.frombuffer(data, dtype=np.uint8)
    whole = train.evaluate(params, cfg, data, numpy_backend, streams=streams, max_bytes=max_bytes, block=len(data) + 64)
    assert train.evaluate(params, cfg, data, numpy_backend, streams=streams, max_bytes=max_bytes, block=block) == whole


def test_progress_shows_samples_of_the_model(corpus, tmp_path, capsys):
    """With sample_seconds, the progress output gets lines of sampled text: one line each, no 0 byte
    and no raw control byte; without, none."""
    cfg = tiny_config(**CFG)
    train.pretrain(corpus, cfg, tmp_path / "a", steps=3, progress=True, save_seconds=0, backend="numpy",
                   sample_seconds=1e-9)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("sample at step")]
    assert [line.split(":")[0] for line in lines] == ["sample at step 1", "sample at step 2", "sample at step 3"]
    assert all(unicodedata.category(ch) != "Cc" for line in lines for ch in line)
    train.pretrain(corpus, cfg, tmp_path / "b", steps=3, progress=True, save_seconds=0, backend="numpy")
    assert "sample at step" not in capsys.readouterr().err


@given(seed=st.integers(0, 2 ** 32))
@settings(max_examples=20, deadline=None)
def test_preview_is_one_printable_line(seed):
    from intlm.sample import preview

    cfg = tiny_config()
    params = conftest_random_params(cfg, np.random.default_rng(seed))
    text = preview(params, cfg, 60, seed=seed)
    assert len(text.splitlines()) <= 1 and all(unicodedata.category(ch) != "Cc" for ch in text)
