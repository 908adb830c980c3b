"""Runs started from another run's checkpoint (``pretrain --init``), and ``eval`` on several corpora."""

import dataclasses
import json
import shutil

import numpy as np
import pytest
import zarr

from intlm import checkpoint, train
from intlm.errors import IntlmError
from intlm.run import Run, load_run

from conftest import run_main, same_bytes_three_ways, text_bytes, tiny_config

BASE = dict(population=8, window=4, mlp_ratio=2, alpha_q16=65536, momentum_shift=2)
TINY = ["--population", "8", "--window", "4"]


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("INTLM_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def base_run(corpus, tmp_path_factory):
    """A 3-step run (a checkpoint per step) to start others from."""
    run_dir = tmp_path_factory.mktemp("base") / "run"
    train.pretrain(corpus, tiny_config(**BASE), run_dir, steps=3, progress=False, save_seconds=0, backend="numba")
    return run_dir


@pytest.fixture
def other_text(tmp_path):
    path = tmp_path / "other.txt"
    path.write_bytes(text_bytes(500, seed=11).upper())
    return path


def stored_hash(folder) -> str:
    return dict(zarr.open_group(folder, mode="r").attrs)["content_hash"]


def test_a_run_from_a_checkpoint_starts_at_its_weights_and_records_it(corpus, base_run, tmp_path):
    """Step 0 of the new run is the checkpoint's parameters with a fresh optimiser (momentum zero,
    state zero, step 0); the run records the checkpoint's absolute path and content hash, in every
    checkpoint it writes; a run folder given means its newest checkpoint."""
    cfg = dataclasses.replace(tiny_config(**BASE), population=16)  # an optimiser setting may change
    train.pretrain(corpus, cfg, tmp_path / "new", steps=0, progress=False, backend="numpy", init=base_run)
    train.pretrain(corpus, cfg, tmp_path / "two", steps=2, progress=False, save_seconds=0, backend="numpy",
                   init=base_run)
    start, attrs = load_run(tmp_path / "new")
    base, _ = load_run(base_run)
    assert start.step == 0 and start.cfg.population == 16 and start.recurrent.shape[0] == 16
    assert all(np.array_equal(start.params[k], base.params[k]) for k in base.params)
    assert not any(np.any(m) for m in start.momentum.values()) and not np.any(start.recurrent)
    newest = base_run / "step-00000003"
    assert attrs["init"] == {"path": str(newest.resolve()), "content_hash": stored_hash(newest), "step": 3}
    assert load_run(tmp_path / "two")[1]["init"] == attrs["init"]
    assert [json.loads(line)["step"] for line in (tmp_path / "two" / "log.jsonl").read_text().splitlines()] == [1, 2, 2]


def test_a_run_from_a_checkpoint_is_the_same_on_both_backends_and_across_resume(corpus, base_run, tmp_path):
    """With Anchored Weight Decay on: NumPy and Numba write identical checkpoints, a resumed run equals
    an uninterrupted one, and the anchor stored is the --init checkpoint's weights."""
    cfg = dataclasses.replace(tiny_config(**BASE), anchor_decay=1)
    run, _ = load_run(same_bytes_three_ways(tmp_path, lambda out, steps, backend, resume: train.pretrain(
        corpus, cfg, out, steps=steps, progress=False, save_seconds=0, backend=backend, resume=resume,
        init=None if resume else base_run), 3))
    base, _ = load_run(base_run)
    assert all(np.array_equal(run.anchor[k], base.params[k]) for k in base.params)


def test_cli_init_keeps_the_checkpoints_settings_unless_typed(monkeypatch, capsys, base_run, other_text, tmp_path):
    """`pretrain NEW_CORPUS --init RUN`: the model shape and every setting not typed are the
    checkpoint's (momentum shift 2 here, not the default), typed ones are new."""
    code, _, err = run_main(monkeypatch, capsys, "pretrain", other_text, "--init", base_run, "--out", tmp_path / "new",
                            "--steps", "1", "--population", "16", "--anchor-decay", "3")
    assert code == 0, err
    run, attrs = load_run(tmp_path / "new")
    assert run.cfg == dataclasses.replace(load_run(base_run)[0].cfg, population=16, anchor_decay=3)
    assert attrs["corpus"]["source"] != load_run(base_run)[1]["corpus"]["source"]


@pytest.mark.parametrize("args,fragments", [
    (["--width", "32"], ["width 16", "leave --width out"]),
    (["--layers", "2", "--mlp-ratio", "1"], ["layers 1, mlp ratio 2", "leave --layers, --mlp-ratio out"]),
    (["--resume"], ["--init starts a new run", "--resume"]),
    (["--resume-or-start"], ["--init starts a new run"]),
    (["--anchor-decay", "17"], ["anchor decay"]),
])
def test_cli_init_refusals_are_one_line(monkeypatch, capsys, base_run, other_text, tmp_path, args, fragments):
    """A shape that differs from the checkpoint's, --init with --resume, a bad decay: one error line,
    nothing written."""
    code, _, err = run_main(monkeypatch, capsys, "pretrain", other_text, "--init", base_run, "--out", tmp_path / "new",
                            "--steps", "1", *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), err
    assert all(f in lines[0] for f in fragments), err
    assert not (tmp_path / "new").exists()


def test_cli_init_from_a_missing_or_damaged_checkpoint(monkeypatch, capsys, base_run, other_text, tmp_path):
    """A missing --init path, a damaged checkpoint named directly, and a run folder whose checkpoints
    are all damaged: one error line each. A run folder with a damaged newest checkpoint: one warning
    line, and the run starts from (and records) the newest intact one."""
    broken = tmp_path / "broken"
    shutil.copytree(base_run, broken)
    for step in (1, 2, 3):
        (broken / f"step-{step:08d}" / "zarr.json").unlink()
    damaged_newest = tmp_path / "damaged-newest"
    shutil.copytree(base_run, damaged_newest)
    (damaged_newest / "step-00000003" / "zarr.json").unlink()
    for init, fragment in ((tmp_path / "nowhere", "does not exist"), (broken / "step-00000003", "no zarr.json"),
                           (broken, "no zarr.json")):
        code, _, err = run_main(monkeypatch, capsys, "pretrain", other_text, "--init", init, "--out", tmp_path / "new",
                                "--steps", "1")
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], err
        assert not (tmp_path / "new").exists()
    code, _, err = run_main(monkeypatch, capsys, "pretrain", other_text, "--init", damaged_newest, "--out",
                            tmp_path / "new", "--steps", "1")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "step-00000003" in warnings[0] and "passed over" in warnings[0], err
    assert load_run(tmp_path / "new")[1]["init"]["path"] == str((damaged_newest / "step-00000002").resolve())


def test_init_into_a_folder_with_checkpoints_is_refused(corpus, base_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(base_run, copy)
    with pytest.raises(IntlmError, match="already holds checkpoints"):
        train.pretrain(corpus, tiny_config(**BASE), copy, steps=4, progress=False, init=base_run)


def test_a_damaged_init_record_is_refused_on_load(tmp_path):
    run = Run.fresh(tiny_config(**BASE), records={"init": {"path": "/x", "content_hash": "not a hash", "step": 1}})
    run.save(tmp_path, {"train_sha256_16": "0"})
    with pytest.raises(IntlmError, match="damaged record of the checkpoint it started from"):
        load_run(tmp_path)


def test_eval_prints_a_line_per_corpus(monkeypatch, capsys, base_run, corpus, other_text, tmp_path):
    """`eval RUN A B` prints one line for A and one for B, each naming its corpus, with the figure
    `eval RUN A` prints alone; a missing corpus among them is one error line and no figures."""
    code, out, err = run_main(monkeypatch, capsys, "eval", base_run, corpus.path, other_text, "--backend", "numpy")
    assert code == 0, err
    lines = out.strip().splitlines()  # each corpus's line, then its compressors' line
    assert len(lines) == 4 and all(line.startswith("  compressors, alone / given") for line in lines[1::2])
    lines = lines[0::2]
    assert lines[0].endswith(str(corpus.path)) and lines[1].endswith(str(other_text))
    assert all(line.startswith("step 3: validation") for line in lines)
    code, alone, _ = run_main(monkeypatch, capsys, "eval", base_run, other_text, "--backend", "numpy")
    assert alone.strip().splitlines()[0] == lines[1]
    assert lines[0].split("|")[0] != lines[1].split("|")[0]
    code, out, err = run_main(monkeypatch, capsys, "eval", base_run, other_text, tmp_path / "gone.txt")
    assert code == 2 and out == "" and err.startswith("error:") and len(err.strip().splitlines()) == 1, err


def test_the_checkpoint_content_hash_is_the_one_stored(base_run):
    """checkpoint.load reports the verified hash that start_from records."""
    folder = base_run / "step-00000002"
    assert checkpoint.load(folder).content_hash == stored_hash(folder)
