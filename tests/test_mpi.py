"""MPI training (intlm/distributed.py): the pair split, and `mpirun -n K intlm pretrain` writing the
very checkpoint bytes of one plain process for K = 1..4 on both CPU backends, resuming with another
K, the parameter-hash guard, and faults ending the whole job with one line instead of a hang.

The runs use the registry MPI (pip install 'intlm[mpi]') on localhost, one thread per process, tiny
configs; the file skips when mpi4py or mpirun is missing."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intlm.distributed import pair_ranges
from intlm.errors import IntlmError

from conftest import checkpoint_state, text_bytes

ROOT = Path(__file__).resolve().parents[1]
# 7 pairs: uneven shares for 2, 3 and 4 processes; CLI defaults otherwise (rank fitness, momentum),
# but no context tables (test_context_tables_under_mpi_... has them)
TINY = ["--population", "14", "--width", "16", "--layers", "1", "--mlp-ratio", "1", "--window", "4",
        "--save-seconds", "0", "--keep-last", "0", "--eval-seconds", "1000", "--context-bits", "0"]
STEPS = 4


@settings(max_examples=300, deadline=None)
@given(pairs=st.integers(1, 5000), processes=st.integers(1, 600))
def test_pair_ranges_cover_every_pair_once(pairs, processes):
    """Contiguous ranges in rank order, every pair in exactly one, sizes differing by at most one,
    none empty; fewer pairs than processes is refused."""
    if pairs < processes:
        with pytest.raises(IntlmError):
            pair_ranges(pairs, processes)
        return
    ranges = pair_ranges(pairs, processes)
    assert len(ranges) == processes
    assert [p for p0, p1 in ranges for p in range(p0, p1)] == list(range(pairs))
    sizes = [p1 - p0 for p0, p1 in ranges]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


def _mpi_missing():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install 'intlm[mpi]')"
    if shutil.which("mpirun") is None:
        return "mpirun is not on PATH"
    return None


needs_mpi = pytest.mark.skipif(_mpi_missing() is not None, reason=str(_mpi_missing()))


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("mpi")
    (root / "corpus.txt").write_bytes(text_bytes(3000, 5))
    return root


def _env(work, **extra):
    env = {k: v for k, v in os.environ.items() if k != "INTLM_TEST_FAULT"}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               INTLM_CACHE=str(work / "cache"), NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1", **extra)
    return env


def pretrain(work, out, k, *args, timeout=120, **env):
    """`intlm pretrain` as one plain process (k None) or under `mpirun -n k`."""
    launch = [] if k is None else ["mpirun", "-n", str(k)]
    cmd = [*launch, sys.executable, "-m", "intlm.cli", "pretrain", str(work / "corpus.txt"), "--out", str(out),
           *TINY, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env(work, **env))


def checkpoints(run_dir) -> dict:
    return {p.name: checkpoint_state(p) for p in sorted(Path(run_dir).glob("step-*"))}


def error_lines(stderr) -> list:
    return [line for line in stderr.splitlines() if line.startswith("error")]


@pytest.fixture(scope="module")
def plain(work):
    """The reference: one plain process (no MPI), per backend."""
    runs = {}
    for backend in ("numpy", "numba"):
        done = pretrain(work, work / f"plain-{backend}", None, "--steps", str(STEPS), "--backend", backend)
        assert done.returncode == 0, done.stderr
        runs[backend] = checkpoints(work / f"plain-{backend}")
        assert len(runs[backend]) == STEPS
    return runs


@needs_mpi
@pytest.mark.parametrize("backend,k,reduce", [("numpy", 1, "fitness"), ("numpy", 2, "fitness"), ("numpy", 3, "fitness"),
                                              ("numpy", 4, "fitness"), ("numba", 1, "fitness"), ("numba", 2, "fitness"),
                                              ("numba", 3, "fitness"), ("numpy", 3, "sums"), ("numba", 3, "sums")])
def test_mpi_checkpoints_are_the_single_process_bytes(work, plain, backend, k, reduce):
    """Every checkpoint (parameters, momentum, every pair's recurrent state, attrs) of K processes
    is byte for byte the plain run's, whether they combine fitnesses or update sums; rank 0 alone
    wrote the log."""
    out = work / f"mpi-{backend}-{k}-{reduce}"
    done = pretrain(work, out, k, "--steps", str(STEPS), "--backend", backend, "--mpi-reduce", reduce)
    assert done.returncode == 0, done.stderr
    assert checkpoints(out) == plain[backend]
    assert done.stderr.count("checkpoints in") == 1 and f"x {k} MPI processes" in done.stderr
    log = (out / "log.jsonl").read_text().splitlines()
    assert len(log) == STEPS + 1  # one record per step and the final one: no process wrote twice


@needs_mpi
def test_resume_with_another_process_count(work, plain):
    """2 processes for 2 steps, then 3 processes resume to STEPS: the plain run's bytes."""
    out = work / "resume"
    assert pretrain(work, out, 2, "--steps", "2", "--backend", "numpy").returncode == 0
    done = pretrain(work, out, 3, "--steps", str(STEPS), "--backend", "numpy", "--resume")
    assert done.returncode == 0, done.stderr
    assert checkpoints(out) == plain["numpy"]


@needs_mpi
def test_parameter_guard_stops_before_a_checkpoint(work):
    """A process whose parameters diverge (one flipped bit on rank 1 at step 3): every process
    stops with one error naming step 3, and no checkpoint of step 3 is written."""
    out = work / "guard"
    done = pretrain(work, out, 2, "--steps", str(STEPS), "--backend", "numpy", INTLM_TEST_FAULT="corrupt:1:3")
    assert done.returncode == 2
    lines = error_lines(done.stderr)
    assert len(lines) == 1 and "differ at step 3" in lines[0], done.stderr
    assert sorted(checkpoints(out)) == ["step-00000001", "step-00000002"]


@needs_mpi
@pytest.mark.parametrize("fault", ["raise", "kill"])
def test_a_failing_process_ends_the_job(work, plain, fault):
    """One process raising (or killed) at step 3 ends every process, non-zero, within the timeout
    (no hang); a raise reports one line naming its rank. The last checkpoint stays intact: resuming
    from it gives the plain run's bytes."""
    out = work / f"fault-{fault}"
    done = pretrain(work, out, 2, "--steps", str(STEPS), "--backend", "numpy", timeout=60,
                    INTLM_TEST_FAULT=f"{fault}:1:3")
    assert done.returncode != 0
    if fault == "raise":
        lines = error_lines(done.stderr)
        assert len(lines) == 1 and "rank 1" in lines[0] and "injected failure" in lines[0], done.stderr
    assert "step-00000002" in checkpoints(out)
    resumed = pretrain(work, out, 3, "--steps", str(STEPS), "--backend", "numpy", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert checkpoints(out) == plain["numpy"]


@needs_mpi
def test_too_few_pairs_is_refused_before_any_work(work):
    """3 processes cannot share 2 pairs: one error line, status 2, no run folder."""
    out = work / "refused"
    done = pretrain(work, out, 3, "--steps", "1", "--backend", "numpy", "--population", "4")
    assert done.returncode == 2
    lines = error_lines(done.stderr)
    assert len(lines) == 1 and "population >= 6" in lines[0], done.stderr
    assert not out.exists()


@needs_mpi
def test_a_held_run_folder_stops_every_process(work):
    """Rank 0 cannot take the run lock (another process holds it): one error line, every process
    exits, nothing hangs in a collective."""
    import fcntl

    out = work / "locked"
    out.mkdir()
    with open(out / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        done = pretrain(work, out, 2, "--steps", "1", "--backend", "numpy", timeout=60)
    assert done.returncode == 2
    lines = error_lines(done.stderr)
    assert len(lines) == 1 and "in use" in lines[0], done.stderr


@needs_mpi
def test_ctrl_c_to_mpirun_saves_once_and_stops_every_process(work):
    """SIGINT to mpirun (which passes it to every process): all stop after the same step, rank 0
    saves it and says so once; exit status 130."""
    import signal
    import time

    out = work / "interrupted"
    cmd = ["mpirun", "-n", "2", sys.executable, "-m", "intlm.cli", "pretrain", str(work / "corpus.txt"), "--out",
           str(out), *TINY[:-4], "--steps", "100000", "--save-seconds", "1000", "--eval-seconds", "1000",
           "--backend", "numpy"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=_env(work))
    deadline = time.time() + 30
    while not (out / "log.jsonl").exists() or (out / "log.jsonl").stat().st_size == 0:
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert stderr.count("stopped by SIGINT") == 1, stderr
    assert len(checkpoints(out)) == 1


@needs_mpi
def test_mpi_flag_without_a_launcher_is_a_world_of_one(work, plain):
    """`intlm pretrain --mpi` started plainly (an MPI singleton) writes the plain run's bytes."""
    out = work / "singleton"
    done = pretrain(work, out, None, "--steps", str(STEPS), "--backend", "numpy", "--mpi")
    assert done.returncode == 0, done.stderr
    assert "x 1 MPI processes" in done.stderr
    assert checkpoints(out) == plain["numpy"]


@needs_mpi
def test_periodic_guard_between_saves(work):
    """Without saves, the guard still runs every GUARD_STEPS steps: a divergence found at step 16
    stops the job there with one line, and no checkpoint is written at all."""
    from intlm.distributed import GUARD_STEPS

    out = work / "guard-periodic"
    done = pretrain(work, out, 2, "--steps", str(GUARD_STEPS + 4), "--backend", "numpy", "--save-seconds", "1000",
                    INTLM_TEST_FAULT=f"corrupt:0:{GUARD_STEPS}")
    assert done.returncode == 2
    lines = error_lines(done.stderr)
    assert len(lines) == 1 and f"differ at step {GUARD_STEPS}" in lines[0], done.stderr
    assert checkpoints(out) == {}


@needs_mpi
@pytest.mark.parametrize("k,reduce,credit", [(1, "sums", "window"), (2, "sums", "window"), (3, "fitness", "window"),
                                             (3, "sums", "window"), (2, "fitness", "reads"), (3, "sums", "graded"),
                                             (2, "fitness", "mirrored"), (3, "sums", "mirrored")])
def test_context_tables_under_mpi_are_the_single_process_bytes(work, k, reduce, credit):
    """With context tables every process needs every pair's bytes before (the update's reads), and
    under reduce "sums" each process's sparse sums list other rows (merged exactly); with reads credit
    the processes gather every member's per-byte log-likelihoods (reduce "fitness") or credit their own
    pairs' reads (reduce "sums"; graded credit's scale is each pair's own), with mirrors each member's
    and its mirror's: K processes write the plain run's bytes every way."""
    tables = ["--context-bits", "8", "--context-order", "3", "--backend", "numba", "--steps", str(STEPS),
              "--context-credit", "graded" if credit == "mirrored" else credit,
              "--context-mirror", str(int(credit == "mirrored"))] + (["--context-logits", "1"] if credit != "window" else [])
    plain_out = work / f"ctx-plain-{credit}"
    if not plain_out.exists():
        plain = pretrain(work, plain_out, None, *tables)
        assert plain.returncode == 0, plain.stderr
    done = pretrain(work, work / f"ctx-mpi-{k}-{reduce}-{credit}", k, *tables, "--mpi-reduce", reduce)
    assert done.returncode == 0, done.stderr
    assert checkpoints(work / f"ctx-mpi-{k}-{reduce}-{credit}") == checkpoints(plain_out)
