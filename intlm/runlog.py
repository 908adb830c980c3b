"""A run's ``log.jsonl``: one JSON record per step, repaired when a run resumes.

A crash or a full disk can cut the last record short, and a checkpoint older than the log's end
(a kill between the two writes, or a damaged newest checkpoint passed over) leaves records the
resumed run will write again. Resuming keeps only whole records up to the checkpoint's step and
then appends a marker, so the log reads as one history whose ``elapsed_s`` is total training time.
"""

import json
from pathlib import Path

from .atomic import atomic_file

LOG_NAME = "log.jsonl"


def _kept(line: bytes, step: int) -> bool:
    try:
        rec = json.loads(line)
    except ValueError:  # a record cut short (UnicodeDecodeError is a ValueError too)
        return False
    return isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] <= step


def open_log(run_dir, step: int, train_seconds: float, resumed: bool):
    """The log of ``run_dir`` opened for appending: fresh, or repaired up to ``step`` with a resume
    marker at ``train_seconds`` when ``resumed``."""
    path = Path(run_dir) / LOG_NAME
    if resumed:
        old = path.read_bytes().split(b"\n") if path.exists() else []
        marker = json.dumps({"step": step, "elapsed_s": round(train_seconds, 3), "resumed": True})
        atomic_file(path, b"".join(line + b"\n" for line in old if _kept(line, step)) + marker.encode() + b"\n")
    else:
        atomic_file(path, b"")
    return open(path, "a")
