"""Figures for MPI training: tokens/s, the phases of a step and the time spent communicating.

    mpirun -n 2 -genv NUMBA_NUM_THREADS 1 python3 scripts/speed/mpi_bench.py --width 32
    NUMBA_NUM_THREADS=2 python3 scripts/speed/mpi_bench.py --width 32          # one process, no MPI

Runs ``--steps`` timed training steps (after one untimed) of a fresh run on a synthetic corpus and
prints one JSON line from rank 0: tokens/s, each phase's seconds per step (the slowest process's),
"comm" (the step's Allgatherv, waiting for the slowest process included) and "allgather_us" (a bare
Allgatherv of the same size after a barrier: the wire cost alone), and the bytes each process sends.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from intlm import distributed  # noqa: E402
from intlm.backends import get  # noqa: E402
from intlm.config import Config  # noqa: E402
from intlm.run import Run  # noqa: E402
from intlm.train import train_step  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--population", type=int, default=2048)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--backend", default="numba")
    ap.add_argument("--reduce", default="fitness", choices=["fitness", "sums"])
    a = ap.parse_args()
    cfg = Config(width=a.width, population=a.population, window=a.window).check()
    world = distributed.world()
    if world is not None:
        world.split(cfg)
        world.reduce = a.reduce
    be = get(a.backend)
    data = np.random.default_rng(0).integers(0, 256, 1 << 20).astype(np.uint8)
    run = Run.fresh(cfg)
    train_step(run, data, be, world=world)  # compile, warm up
    if world is not None:
        world.comm.Barrier()
        world.comm_seconds = 0.0
    phases = {}
    t = time.perf_counter()
    for _ in range(a.steps):
        train_step(run, data, be, timings=phases, world=world)
    seconds = time.perf_counter() - t
    per_step = {k: v / a.steps for k, v in phases.items()}
    out = {"processes": 1 if world is None else world.size, "threads": int(os.environ.get("NUMBA_NUM_THREADS", 0)),
           "width": a.width, "population": a.population, "window": a.window, "backend": be.name,
           "step_s": seconds / a.steps, "tokens_per_s": a.population * a.window * a.steps / seconds,
           "load_1min": os.getloadavg()[0], "reduce": a.reduce}
    if world is not None:
        comm = world.comm
        slowest = {k: comm.allreduce(v, op=world.MPI.MAX) for k, v in sorted(per_step.items())}
        out["phases_s"] = slowest
        out["comm_share"] = slowest["comm"] / out["step_s"]
        local = np.zeros(2 * (world.p1 - world.p0), dtype=np.int32)
        reps = 200
        comm.Barrier()
        t = time.perf_counter()
        for _ in range(reps):
            world.allgather_fitness(local, 0)
        out["allgather_us"] = comm.allreduce((time.perf_counter() - t) / reps, op=world.MPI.MAX) * 1e6
        out["bytes_sent_per_process_per_step"] = 4 * (2 * (world.p1 - world.p0) + 1)
        out["bytes_received_per_process_per_step"] = 4 * (cfg.population + world.size)
        if a.reduce == "sums":
            out["sums_bytes_per_process_per_step"] = 8 * sum(p.size for p in run.params.values())
        if not world.primary:
            return
    else:
        out["phases_s"] = per_step
    print(json.dumps(out))


if __name__ == "__main__":
    main()
