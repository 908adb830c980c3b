"""MPI: several processes train one run, bit-identical to one process.

Evolution strategies scale out by sending fitnesses, not gradients. Each of K processes owns a
contiguous range of the population's pairs (``pair_ranges``): it evaluates only its members, on its
own pairs' data streams and recurrent state rows, exactly as the single process would. One
Allgatherv of the int32 pair fitnesses per step (4 bytes x population, plus one control word per
process) gives every process the same fitness vector; every process regenerates every pair's noise
from the counter hash and applies the same integer update, so parameters stay identical without
ever being sent, and the bytes sent per step do not grow with the model.

Rank 0 alone holds the run lock and writes checkpoints, log.jsonl and the progress line; the other
processes' state rows are gathered to it only when it saves, so a checkpoint is byte for byte the
single process's, and any process count can resume it. Wall-clock decisions (save, stop after
--minutes) are rank 0's and a signal on any process stops all: they travel in the control word of
the same Allgatherv. Every GUARD_STEPS steps, and before every save, one integer Allreduce compares
a hash of the parameters; a mismatch stops every process with one error naming the step.

mpi4py is imported only when the job was launched by an MPI launcher (``world``) or asked for
(--mpi, INTLM_MPI=1), so a plain run never touches MPI.
"""

import dataclasses
import hashlib
import os
import sys
import time

import numpy as np

from . import context
from .errors import IntlmError
from .params import tensors

# environment a launcher sets: MPICH/Intel (hydra, also srun --mpi=pmi2), Open MPI, PMIx (srun --mpi=pmix)
LAUNCHER_VARS = ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")
GUARD_STEPS = 16  # steps between parameter-hash comparisons (and one before every save)
# control word bits (rank 0 sets SAVE and TIME_UP; any process sets SIGNAL)
SAVE, TIME_UP = 1, 2
SIGNAL_SHIFT = 8  # the signal number, shifted past the flags


def control_word(signum=None, save=False, time_up=False) -> int:
    """What one process asks of all after a step: a signal it caught, and (rank 0's) a save due or
    the time up. The words of all processes are OR'ed in the step's Allgatherv (allgather_fitness)."""
    return ((signum or 0) << SIGNAL_SHIFT) | (SAVE if save else 0) | (TIME_UP if time_up else 0)


def read_control(word: int) -> tuple:
    """(signal number or None, save due, time up) of an OR'ed control word."""
    return (word >> SIGNAL_SHIFT) or None, bool(word & SAVE), bool(word & TIME_UP)


def pair_ranges(pairs: int, processes: int) -> list:
    """Contiguous [p0, p1) per process covering range(pairs) once, sizes differing by at most one
    (the first ``pairs % processes`` get the extra pair)."""
    if processes < 1 or pairs < processes:
        raise IntlmError(f"{pairs} pairs cannot be split over {processes} processes")
    base, extra = divmod(pairs, processes)
    bounds = [r * base + min(r, extra) for r in range(processes + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def launched() -> bool:
    """True when an MPI launcher started this process, or INTLM_MPI=1 asks for MPI."""
    return os.environ.get("INTLM_MPI") == "1" or any(v in os.environ for v in LAUNCHER_VARS)


def param_hash(params) -> int:
    """A 63-bit hash of every parameter array (names, shapes, bytes)."""
    h = hashlib.blake2b(digest_size=8)
    for name in sorted(params):
        a = np.ascontiguousarray(params[name])
        h.update(f"{name}{a.shape}{a.dtype}".encode())
        h.update(a.tobytes())
    return int.from_bytes(h.digest(), "little") >> 1


class Mismatch(IntlmError):
    """Raised on every process alike (so only rank 0 reports it)."""
    everywhere = True


class Quiet(SystemExit):
    """A process leaving because another reported the job's error (every process stops alike)."""
    everywhere = True


class World:
    """This process's place in the MPI job: rank, size, its pair range, and the collectives."""

    def __init__(self, comm=None):
        try:
            from mpi4py import MPI
        except ImportError as err:
            raise IntlmError(f"MPI was asked for but mpi4py cannot be imported ({err}): "
                             f"pip install 'intlm[mpi]'") from None
        self.MPI = MPI
        self.comm = comm or MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.primary = self.rank == 0
        self.collectives_started = False
        self.p0 = self.p1 = None
        # what the processes combine each step: "fitness" (every process regenerates all noise and
        # sums Z itself; bytes independent of the model) or "sums" (Z of own pairs, Allreduce'd)
        self.reduce = "fitness"
        self.bytes_sent = 0  # per process, what its collectives put on the wire (for the figures)
        self.comm_seconds = 0.0

    @property
    def local_rank(self) -> int:
        """Rank among the processes on this node: the GPU a process uses."""
        return self.comm.Split_type(self.MPI.COMM_TYPE_SHARED).Get_rank()

    def split(self, cfg):
        """Take this process's pair range; refuses a population giving some process no pair."""
        if cfg.pairs < self.size:
            raise IntlmError(f"population {cfg.population} has {cfg.pairs} pairs for {self.size} processes: "
                             f"each process needs at least one pair (population >= {2 * self.size})")
        self.ranges = pair_ranges(cfg.pairs, self.size)
        self.p0, self.p1 = self.ranges[self.rank]
        self.local_cfg = dataclasses.replace(cfg, population=2 * (self.p1 - self.p0))  # for update_sums of own pairs
        return self.p0, self.p1

    def use_device(self, backend):
        """One process per GPU: a GPU backend uses the device numbered by this process's rank on its
        node (the processes of a node share its GPUs in order)."""
        if backend == "cupy":
            import cupy

            cupy.cuda.Device(self.local_rank % cupy.cuda.runtime.getDeviceCount()).use()

    # -- setup -----------------------------------------------------------------------------------
    def agree(self, err):
        """Collective: after setup, every process learns whether any failed. The first failing
        process raises its error (the job's one line); the others exit quietly (status 2)."""
        failed = self.comm.allgather(err is not None)
        self.collectives_started = True
        if any(failed):
            if failed.index(True) == self.rank:
                err.everywhere = err.report = True  # every process stops; this one says why
                raise err
            raise Quiet(2)

    # -- per step --------------------------------------------------------------------------------
    def allgather_fitness(self, local, control: int):
        """(every member's fitness, int32 population, in pair order; the OR of the control words).
        ``local`` (members,) or, for the tables' reads credit, each member's log-likelihoods (members,
        window), with mirrors (members, 2, window): the gathered fitness has the same columns."""
        t = time.perf_counter()
        cols = local.size // local.shape[0]  # 1, or the window with per-byte log-likelihoods
        send = np.empty(local.size + 1, dtype=np.int32)
        send[:-1] = local.reshape(-1)
        send[-1] = control
        counts = [2 * (p1 - p0) * cols + 1 for p0, p1 in self.ranges]
        displs = np.concatenate([[0], np.cumsum(counts)[:-1]]).tolist()
        recv = np.empty(sum(counts), dtype=np.int32)
        self.comm.Allgatherv(send, [recv, counts, displs, self.MPI.INT32_T])
        self.bytes_sent += send.nbytes
        self.comm_seconds += time.perf_counter() - t
        words = recv[np.cumsum(counts) - 1]
        fitness = np.delete(recv, np.cumsum(counts) - 1).reshape((-1,) + local.shape[1:])
        ctl = 0
        for w in words.tolist():
            ctl |= w
        return fitness, ctl

    def allreduce_sums(self, Z):
        """Collective (reduce "sums"): every process's Z over its own pairs, summed exactly in int64
        (each partial sum is a sum over a subset of pairs, so no order of adding overflows). A
        table's sparse sums list different rows on each process: they are gathered and merged
        (context.merge_sums), the rows read by any process's pairs, in ascending order."""
        t = time.perf_counter()
        kinds = {p.name: p.kind for p in tensors(self.local_cfg)}
        out = {n: context.merge_sums(self.comm.allgather(Z[n])) for n in Z if kinds[n] == "table"}
        names = [n for n in Z if kinds[n] != "table"]
        flat = np.concatenate([np.asarray(Z[n], dtype=np.int64).reshape(-1) for n in names])
        total = np.empty_like(flat)
        self.comm.Allreduce(flat, total, op=self.MPI.SUM)
        self.bytes_sent += flat.nbytes + sum(sum(a.nbytes for a in Z[n]) for n in out)
        at = 0
        for n in names:
            size = Z[n].size
            out[n] = total[at:at + size].reshape(Z[n].shape)
            at += size
        self.comm_seconds += time.perf_counter() - t
        return out

    def guard(self, params, step: int):
        """Collective: every process's parameter hash must be the same (MIN == MAX)."""
        _test_hooks(self.rank, step, params)
        h = param_hash(params)
        both = np.array([h, -h], dtype=np.int64)
        out = np.empty(2, dtype=np.int64)
        self.comm.Allreduce(both, out, op=self.MPI.MAX)
        self.bytes_sent += both.nbytes
        if out[0] != -out[1]:
            raise Mismatch(f"the processes' parameters differ at step {step} (hash guard): the job stops "
                           f"before writing a checkpoint; resume from the last one")

    def gather_state(self, recurrent):
        """Collective: rank 0's ``recurrent`` state gets every process's own rows (what a save needs)."""
        row = recurrent[0].size  # int8 bytes per member
        counts = [2 * (p1 - p0) * row for p0, p1 in self.ranges]
        displs = [2 * p0 * row for p0, _ in self.ranges]
        mine = np.ascontiguousarray(recurrent[2 * self.p0:2 * self.p1])
        if self.primary:
            full = np.empty_like(recurrent)
            self.comm.Gatherv(mine, [full, counts, displs, self.MPI.BYTE], root=0)
            recurrent[...] = full
        else:
            self.comm.Gatherv(mine, None, root=0)

    # -- failure ---------------------------------------------------------------------------------
    def fail(self, code: int, everywhere: bool):
        """End this process after its error line: quietly when every process has the same error,
        else MPI_Abort, so a failure on one process ends the whole job instead of hanging it."""
        if self.size > 1 and self.collectives_started and not everywhere:
            sys.stderr.flush()
            # the launcher forwards output asynchronously; aborting at once can drop the error line
            time.sleep(1.0)
            self.comm.Abort(code)
        sys.exit(code)


def _test_hooks(rank: int, step: int, params):
    """Faults the tests inject on one process (INTLM_TEST_FAULT=kind:rank:step): ``corrupt`` flips
    a parameter, ``raise`` raises, ``kill`` dies by SIGKILL."""
    fault = os.environ.get("INTLM_TEST_FAULT", "").split(":")
    if len(fault) == 3 and fault[1:] == [str(rank), str(step)]:
        if fault[0] == "corrupt":
            first = params[sorted(params)[0]].reshape(-1)
            first[0] = first[0] ^ 1
        elif fault[0] == "raise":
            raise RuntimeError(f"injected failure at step {step}")
        elif fault[0] == "kill":
            import signal

            os.kill(os.getpid(), signal.SIGKILL)


_WORLD = None


def world(force: bool = False):
    """The World when running under MPI (or ``force``), else None (one plain process)."""
    global _WORLD
    if _WORLD is None and (force or launched()):
        _WORLD = World()
    return _WORLD
