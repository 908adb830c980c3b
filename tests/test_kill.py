"""kill -9 at 30 random moments of a training run (inside checkpoint writes, log writes, start-up),
resuming after each: the checkpoints equal an uninterrupted run's bit for bit and nothing is left
behind. About 30 s: tiny model (the default's tables at 2^8 rows), NumPy backend (no compiling per
process), a checkpoint per step."""

import json
import random
import subprocess
import sys
import time

from conftest import checkpoint_state, text_bytes

KILLS = 30
STEPS = 80  # more than the kills can get through: each kill comes a step or two after a save


def pretrain(corpus, out, *extra):
    cmd = [sys.executable, "-m", "intlm.cli", "pretrain", str(corpus), "--out", str(out), "--steps", str(STEPS),
           "--width", "16", "--population", "8", "--window", "8", "--context-bits", "8", "--backend", "numpy",
           "--save-seconds", "0",
           "--eval-seconds", "1000", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def newest_step(run) -> int:
    """The newest checkpoint's step in ``run`` (-1: none)."""
    return max((int(p.name[5:]) for p in run.glob("step-*") if p.name[5:].isdigit()), default=-1)


def test_kill_9_at_random_moments_then_resume_equals_uninterrupted(tmp_path, monkeypatch):
    monkeypatch.setenv("INTLM_CACHE", str(tmp_path / "cache"))
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(text_bytes(2000, seed=13))
    reference = pretrain(corpus, tmp_path / "reference")
    assert reference.wait(timeout=300) == 0, reference.stderr.read()
    run = tmp_path / "run"
    rng = random.Random(13)
    kills = 0
    while kills < KILLS and newest_step(run) < STEPS:
        before = newest_step(run)
        proc = pretrain(corpus, run, "--resume-or-start")
        if rng.random() < 0.2:  # anywhere from start-up on
            time.sleep(rng.uniform(0, 1.0))
        else:  # once this process has saved a step (however slow its start on a busy machine)
            deadline = time.monotonic() + 60
            while newest_step(run) <= before and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(rng.uniform(0, 0.25))
        if proc.poll() is None:
            proc.kill()
            kills += 1
        proc.wait()
        assert proc.returncode in (0, -9), proc.stderr.read()
    assert kills == KILLS, f"the run finished after {kills} kills"
    final = pretrain(corpus, run, "--resume-or-start")
    assert final.wait(timeout=300) == 0, final.stderr.read()

    steps = sorted(p.name for p in run.glob("step-*"))
    assert steps[-1] == f"step-{STEPS:08d}"
    for name in steps:  # every checkpoint written on the way, not only the last
        assert checkpoint_state(run / name) == checkpoint_state(tmp_path / "reference" / name), name
    assert [p.name for p in run.iterdir() if ".tmp-" in p.name or ".old-" in p.name] == []
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert records[-1]["final"] and records[-1]["step"] == STEPS
    assert sum(1 for r in records if r.get("resumed")) >= 1
