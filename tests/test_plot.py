"""Tests of the learning-curve plot: log parsing, the PNG it draws, `intlm plot`, compressor lines.

All from small synthetic log.jsonl files: nothing here trains a model."""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import intlm
from intlm import checkpoint
from intlm.data import load_corpus
from intlm.errors import IntlmError
from intlm.plot import DPI, FIGSIZE, TRAIN_POINTS, Curve, curve_of_run, draw, draw_panels
from intlm.run import data_fingerprint

from conftest import run_main, text_bytes

BASELINES = {"unigram": 4.77, "bigram": 3.66, "xz -9e given train": 2.47, "bzip2 -9 given train": 2.50}


def write_log(run_dir, records, tail=""):
    """A run folder whose log.jsonl holds ``records`` (dicts or raw lines), then ``tail`` unterminated."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    (run_dir / "log.jsonl").write_text("".join(line + "\n" for line in lines) + tail)
    return run_dir


def train(step, t, bpb, **extra):
    return {"step": step, "elapsed_s": t, "train_bpb": bpb, "ties": 0, "moved": 3, "tokens_per_s": 100, **extra}


def synthetic_run(run_dir, steps=600, floor=3.0, seconds_per_step=0.5):
    """A plausible run: training bits/byte falling from 8 towards ``floor``, samples every 30 s, a final."""
    records = []
    for s in range(1, steps + 1):
        t = s * seconds_per_step
        bpb = floor + 5.0 / (1 + s / 20)
        extra = {"val_bpb_sample": round(bpb - 0.1, 4)} if s % 60 == 0 else {}
        records.append(train(s, t, round(bpb + 0.05 * np.sin(s), 4), **extra))
    records.append({"step": steps, "elapsed_s": steps * seconds_per_step + 1, "val_bpb": floor + 0.1, "final": True})
    return write_log(run_dir, records)


def read_png(path):
    import matplotlib.image

    return matplotlib.image.imread(str(path))


# --- curve_of_run --------------------------------------------------------------------------------

def test_curve_of_run_reads_validation_and_training(tmp_path):
    run = write_log(tmp_path / "run", [
        train(1, 0.5, 8.0),
        train(2, 1.0, 7.0, val_bpb_sample=6.9),
        train(3, 1.5, 6.0),
        {"step": 3, "elapsed_s": 2.5, "val_bpb": 5.9, "final": True},
    ])
    c = curve_of_run(run)
    assert c.label == "run"
    assert c.steps == [2, 3] and c.val_bpb == [6.9, 5.9]
    assert c.minutes == pytest.approx([1.0 / 60, 2.5 / 60])
    assert c.train_steps == [1, 2, 3] and c.train_bpb == [8.0, 7.0, 6.0]
    assert c.train_minutes == pytest.approx([0.5 / 60, 1.0 / 60, 1.5 / 60])
    assert curve_of_run(run, label="mine").label == "mine"


def test_truncated_last_line_is_skipped(tmp_path):
    run = write_log(tmp_path / "run", [train(1, 0.5, 8.0), train(2, 1.0, 7.0, val_bpb_sample=6.9)],
                    tail='{"step": 3, "elapsed_s": 1.5, "train_')
    c = curve_of_run(run)
    assert c.train_steps == [1, 2] and c.steps == [2]


def test_resume_repeats_steps_last_record_wins_and_time_carries_on(tmp_path):
    """Killed at step 4 mid-write (checkpoint at step 2); the resumed invocation restarts its clock,
    repeats steps 3-4 and goes on. Its records win, offset by the time step 2 was reached."""
    first = [train(1, 10.0, 8.0), train(2, 20.0, 7.0), train(3, 30.0, 6.5, val_bpb_sample=6.4), train(4, 40.0, 6.3)]
    killed = '{"step": 5, "elapsed_s": 5'  # the partial record runs into the next session's first one
    second = [train(3, 12.0, 6.6), train(4, 24.0, 6.2, val_bpb_sample=6.1), train(5, 36.0, 6.0),
              {"step": 5, "elapsed_s": 40.0, "val_bpb": 5.8, "final": True}]
    lines = [json.dumps(r) for r in first] + [killed + json.dumps(second[0])] + [json.dumps(r) for r in second[1:]]
    c = curve_of_run(write_log(tmp_path / "run", lines))
    assert c.train_steps == [1, 2, 3, 4, 5]
    assert c.train_bpb == [8.0, 7.0, 6.6, 6.2, 6.0]
    assert np.allclose(np.array(c.train_minutes) * 60, [10, 20, 32, 44, 56])
    # step 3's sample is from the abandoned first session (the resumed one logged none there)
    assert c.steps == [3, 4, 5] and c.val_bpb == [6.4, 6.1, 5.8]
    assert np.allclose(np.array(c.minutes) * 60, [30, 44, 60])


def test_resume_after_a_clean_finish(tmp_path):
    """A finished run resumed from its final checkpoint: no repeated steps, the clock restarts."""
    c = curve_of_run(write_log(tmp_path / "run", [
        train(1, 1.0, 8.0), train(2, 2.0, 7.0), {"step": 2, "elapsed_s": 3.0, "val_bpb": 6.9, "final": True},
        train(3, 1.0, 6.5), {"step": 3, "elapsed_s": 2.0, "val_bpb": 6.4, "final": True},
    ]))
    assert np.allclose(np.array(c.train_minutes) * 60, [1, 2, 3])
    assert c.steps == [2, 3] and np.allclose(np.array(c.minutes) * 60, [3, 4])


def test_bad_run_folders(tmp_path):
    with pytest.raises(IntlmError, match="does not exist"):
        curve_of_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IntlmError, match="no log.jsonl"):
        curve_of_run(tmp_path / "empty")
    write_log(tmp_path / "junk", ["not json", '{"step": "x"}', "{}"], tail='{"step": 1, "ela')
    with pytest.raises(IntlmError, match="no usable records"):
        curve_of_run(tmp_path / "junk")


# --- draw ----------------------------------------------------------------------------------------

def test_draw_writes_a_png_of_the_expected_size_that_is_not_blank(tmp_path):
    a = curve_of_run(synthetic_run(tmp_path / "a", steps=2000))
    b = curve_of_run(synthetic_run(tmp_path / "b", floor=2.7, seconds_per_step=0.9), label="wider")
    out = draw([a, b], BASELINES, tmp_path / "figs" / "curve.png", title="two runs")
    assert out == tmp_path / "figs" / "curve.png"
    img = read_png(out)
    assert img.shape[:2] == (round(FIGSIZE[1] * DPI), round(FIGSIZE[0] * DPI))
    assert img.std() > 0
    colours = np.unique(img[..., :3].reshape(-1, 3), axis=0)
    assert len(colours) > 10


def test_draw_validation_only_training_only_and_no_baselines(tmp_path):
    val_only = Curve("v", minutes=[1.0, 2.0], steps=[10, 20], val_bpb=[4.0, 3.5])
    train_only = Curve("t", [], [], [], train_minutes=[0.5, 1.0, 1.5], train_steps=[5, 10, 15],
                       train_bpb=[8.0, 5.0, 4.0])
    img = read_png(draw([val_only, train_only], {}, tmp_path / "c.png"))
    assert img.std() > 0


def test_draw_panels_one_colour_per_label_in_every_panel(tmp_path):
    """Three panels of FIGSIZE's height, each half FIGSIZE's width; a label drawn in two panels has
    one colour (the pixels of each curve's colour appear in both panels); no curve is refused."""
    from matplotlib import rcParams
    from matplotlib.colors import to_rgb

    steps = [0, 10, 20]
    panels = [("old", "bits/byte", {"K=0": (steps, [3.6, 4.0, 4.4]), "K=3": (steps, [3.6, 3.7, 3.8])}),
              ("new", "bits/byte", {"K=3": (steps, [5.0, 3.0, 2.5])}), ("empty", "score", {})]
    img = read_png(draw_panels(panels, tmp_path / "p.png", title="t"))
    assert img.shape[:2] == (round(FIGSIZE[1] * DPI), round(FIGSIZE[0] * 3 / 2 * DPI))
    rgb = np.array(to_rgb(rcParams["axes.prop_cycle"].by_key()["color"][1]))  # K=3's
    hits = np.all(np.abs(img[..., :3] - rgb) < 0.02, axis=-1)
    third = img.shape[1] // 3
    assert hits[:, :third].any() and hits[:, third:2 * third].any() and not hits[:, 2 * third:].any()
    with pytest.raises(IntlmError, match="nothing to plot"):
        draw_panels([("a", "b", {})], tmp_path / "q.png")


def test_draw_refuses_mismatched_lists_and_empty_curves(tmp_path):
    with pytest.raises(ValueError, match="differ in length"):
        draw([Curve("x", [1.0], [1, 2], [3.0])], {}, tmp_path / "x.png")
    with pytest.raises(IntlmError, match="nothing to plot"):
        draw([Curve("x", [], [], [])], {}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_draw_thins_training_and_clamps_the_top(tmp_path, monkeypatch):
    """Many training points come out as at most TRAIN_POINTS; the initial 8 bits/byte stays off-scale."""
    from matplotlib.figure import Figure

    saved = []
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: saved.append(self))
    draw([curve_of_run(synthetic_run(tmp_path / "a", steps=5000))], BASELINES, tmp_path / "c.png")
    ax = saved[0].axes[0]
    assert max(len(line.get_xdata()) for line in ax.get_lines()) <= TRAIN_POINTS
    low, high = ax.get_ylim()
    assert low < min(BASELINES.values()) and max(BASELINES.values()) < high <= max(BASELINES.values()) + 0.7


# --- compressor lines -----------------------------------------------------------------------------

def test_compressor_lines_alone_and_given_the_training_split(tmp_path):
    """Repetitive text compresses far below 8 bits a byte, noise does not; given a training split
    that holds the validation text, a compressor's line falls far below its line alone; the lines
    are cached beside the store and read back unchanged, and computed again for other bytes."""
    from intlm.compressors import cached_lines, compressors, lines
    from intlm.data import Corpus

    text = b"to be or not to be, that is the question\n" * 400
    noise = np.random.default_rng(0).integers(0, 256, 20000).astype(np.uint8).tobytes()
    got = lines(noise + text, text)
    assert set(got) == set(compressors()) and {"xz -9e", "bzip2 -9"} <= set(got)
    assert all(0 < alone < 1 and given < alone for alone, given in got.values()), got
    assert all(7.9 < alone < 8.3 for alone, _ in lines(text, noise).values())
    corpus = Corpus(np.frombuffer(noise + text, np.uint8), np.frombuffer(text, np.uint8), {}, tmp_path / "c.zarr")
    told = []
    assert cached_lines(corpus, lambda: told.append(1)) == got and told == [1]
    assert cached_lines(corpus, lambda: told.append(2)) == got and told == [1]
    assert (tmp_path / "c.zarr.compressors.json").exists()
    other = Corpus(corpus.train, np.frombuffer(text[:-1], np.uint8), {}, tmp_path / "c.zarr")
    cached_lines(other, lambda: told.append(3))
    assert told == [1, 3]


# --- intlm plot ----------------------------------------------------------------------------------

pytestmark = pytest.mark.usefixtures("cache_dir")  # each test its own corpus cache (conftest.py)


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "text.txt"
    path.write_bytes(text_bytes(400, seed=5))
    return path




def test_plot_two_runs_with_a_corpus(monkeypatch, capsys, tmp_path, text_file):
    a, b = synthetic_run(tmp_path / "a"), synthetic_run(tmp_path / "b", floor=2.8)
    out = tmp_path / "curve.png"
    code, stdout, stderr = run_main(monkeypatch, capsys, "plot", a, b, "--out", out, "--corpus", text_file)
    assert code == 0, stderr
    assert stdout.strip() == str(out)
    assert all(name in stderr for name in BASELINES), stderr
    img = read_png(out)
    assert img.shape[:2] == (round(FIGSIZE[1] * DPI), round(FIGSIZE[0] * DPI)) and img.std() > 0


def test_plot_finds_the_recorded_corpus(monkeypatch, capsys, tmp_path, text_file):
    """The corpus named in the first run's checkpoint gives the lines; a changed one gives a note."""
    corpus = load_corpus(text_file, tmp_path / "cache")
    run = synthetic_run(tmp_path / "run")
    record = {"corpus": {"source": str(corpus.path), "train_sha256_16": data_fingerprint(corpus.train)}}
    checkpoint.save(run, 600, {"w": np.zeros(4, dtype=np.int8)}, record)
    code, stdout, stderr = run_main(monkeypatch, capsys, "plot", run, "--out", tmp_path / "c.png")
    assert code == 0 and stdout.strip() == str(tmp_path / "c.png")
    assert stderr.splitlines()[-1].startswith("baselines: unigram"), stderr

    other = synthetic_run(tmp_path / "other")
    checkpoint.save(other, 600, {"w": np.zeros(4, dtype=np.int8)},
                    {"corpus": {"source": str(corpus.path), "train_sha256_16": "0" * 16}})
    code, stdout, stderr = run_main(monkeypatch, capsys, "plot", other, "--out", tmp_path / "d.png")
    assert code == 0 and stdout.strip() == str(tmp_path / "d.png")
    assert len(stderr.strip().splitlines()) == 1 and "without baselines" in stderr


def test_plot_without_a_corpus_says_so_in_one_line(monkeypatch, capsys, tmp_path):
    run = synthetic_run(tmp_path / "run")  # no checkpoint: nothing names its corpus
    code, stdout, stderr = run_main(monkeypatch, capsys, "plot", run, "--out", tmp_path / "c.png")
    assert code == 0 and (tmp_path / "c.png").is_file()
    assert len(stderr.strip().splitlines()) == 1 and "without baselines" in stderr


@pytest.mark.parametrize("make, fragment", [
    (lambda p: p / "missing", "does not exist"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "no log.jsonl"),
])
def test_plot_bad_run_folder_is_one_error_line(monkeypatch, capsys, tmp_path, make, fragment):
    good = synthetic_run(tmp_path / "good")
    code, stdout, stderr = run_main(monkeypatch, capsys, "plot", good, make(tmp_path), "--out", tmp_path / "c.png")
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], stderr
    assert "Traceback" not in stderr and not (tmp_path / "c.png").exists()


def test_plot_bad_corpus_is_one_error_line(monkeypatch, capsys, tmp_path):
    code, _, stderr = run_main(monkeypatch, capsys, "plot", synthetic_run(tmp_path / "run"),
                               "--corpus", tmp_path / "nope.txt", "--out", tmp_path / "c.png")
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), stderr


def test_plot_as_a_process(tmp_path, text_file):
    """The command in its own process, as a user runs it (python -m intlm.cli)."""
    import subprocess

    run = synthetic_run(tmp_path / "run")
    root = str(Path(intlm.__file__).parent.parent)  # this checkout, not whichever intlm is installed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "intlm.cli", "plot", str(run), "--out", str(tmp_path / "p.png"),
                           "--corpus", str(text_file)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / "p.png") and read_png(tmp_path / "p.png").std() > 0
