"""A run's ``log.jsonl``: one JSON record per step, repaired when a run resumes.

A crash or a full disk can cut the last record short, and a checkpoint older than the log's end
(a kill between the two writes, or a damaged newest checkpoint passed over) leaves records the
resumed run will write again. Resuming keeps only whole records up to the checkpoint's step and
then appends a marker, so the log reads as one history whose ``elapsed_s`` is total training time:
the clock carries on from the last record kept (each step is logged before it can be saved, so that
is the checkpoint's own step), and checkpoints hold nothing wall-clock.
"""

import json
from pathlib import Path

from .atomic import atomic_file

LOG_NAME = "log.jsonl"


def _record(line: bytes, step: int):
    """The record a line holds if it is whole and at most ``step``, else None."""
    try:
        rec = json.loads(line)
    except ValueError:  # a record cut short (UnicodeDecodeError is a ValueError too)
        return None
    ok = isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] <= step
    return rec if ok else None


def open_log(run_dir, step: int, resumed: bool) -> tuple:
    """(the log of ``run_dir`` opened for appending, training seconds so far): fresh at 0, or repaired
    up to ``step`` with a resume marker at the last kept record's time when ``resumed``."""
    path = Path(run_dir) / LOG_NAME
    seconds = 0.0
    if resumed:
        kept = []
        for line in path.read_bytes().split(b"\n") if path.exists() else []:
            rec = _record(line, step)
            if rec is not None:
                kept.append(line)
                seconds = float(rec.get("elapsed_s", seconds))
        marker = json.dumps({"step": step, "elapsed_s": round(seconds, 3), "resumed": True})
        atomic_file(path, b"".join(line + b"\n" for line in kept) + marker.encode() + b"\n")
    else:
        atomic_file(path, b"")
    return open(path, "a"), seconds
