"""Tests of the ``intlm`` command: one clear ``error:`` line (exit 2, no traceback) for every user
mistake, through ``main()`` and the installed console script, and the happy paths."""

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from intlm.cli import cli
from intlm.errors import IntlmError
from intlm.sample import escape_controls

from conftest import run_main, text_bytes

TINY = ["--population", "8", "--width", "16", "--window", "4"]


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    """Keep prepared text corpora out of the home folder."""
    monkeypatch.setenv("INTLM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "text.txt"
    path.write_bytes(text_bytes(400, seed=5))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-step run made through the CLI (a checkpoint per step), shared by the sample/eval/corruption tests."""
    root = tmp_path_factory.mktemp("cli-run")
    text = root / "corpus.txt"
    text.write_bytes(text_bytes(400, seed=6))
    out = root / "run"
    old = os.environ.get("INTLM_CACHE")
    os.environ["INTLM_CACHE"] = str(root / "cache")
    try:
        result = CliRunner().invoke(cli, ["pretrain", str(text), "--steps", "2", *TINY, "--out", str(out),
                                          "--save-seconds", "0"])
    finally:
        if old is None:
            del os.environ["INTLM_CACHE"]
        else:
            os.environ["INTLM_CACHE"] = old
    assert result.exit_code == 0, result.output
    return out, text




def assert_one_error_line(err, *fragments):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error:"), err
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[0], err


def intlm_script() -> list:
    """The installed console script (next to this Python, else on PATH)."""
    local = Path(sys.executable).parent / "intlm"
    found = str(local) if local.exists() else shutil.which("intlm")
    assert found, "the intlm console script is not installed"
    return [found]


# --- errors through main(): one line, exit 2 -----------------------------------------------------

def test_missing_corpus_file(monkeypatch, capsys, tmp_path):
    """A corpus path that does not exist."""
    code, _, err = run_main(monkeypatch, capsys, "pretrain", tmp_path / "nope.txt", "--steps", "1", *TINY,
                            "--out", tmp_path / "run")
    assert code == 2
    assert_one_error_line(err, "does not exist")
    assert not (tmp_path / "run").exists()


def test_empty_corpus_file(monkeypatch, capsys, tmp_path):
    """An empty corpus file is refused in one line."""
    (tmp_path / "empty.txt").write_bytes(b"")
    code, _, err = run_main(monkeypatch, capsys, "pretrain", tmp_path / "empty.txt", "--steps", "1", *TINY,
                            "--out", tmp_path / "run")
    assert code == 2
    assert_one_error_line(err, "empty")


def test_binary_corpus_file(monkeypatch, capsys, tmp_path):
    """A corpus with NUL bytes is refused as binary in one line."""
    (tmp_path / "bin.dat").write_bytes(b"text\0with\0nuls" * 10)
    code, _, err = run_main(monkeypatch, capsys, "pretrain", tmp_path / "bin.dat", "--steps", "1", *TINY,
                            "--out", tmp_path / "run")
    assert code == 2
    assert_one_error_line(err, "binary")


def test_folder_without_files(monkeypatch, capsys, tmp_path):
    """`intlm prepare` on a folder with no files is refused in one line."""
    (tmp_path / "empty-folder").mkdir()
    code, _, err = run_main(monkeypatch, capsys, "prepare", tmp_path / "empty-folder", "--out", tmp_path / "c.zarr")
    assert code == 2
    assert_one_error_line(err, "no files")


@pytest.mark.parametrize("args,fragment", [
    (["--steps", "1", "--population", "7", "--width", "16"], "population"),
    (["--steps", "1", "--population", "8", "--width", "10"], "width"),
    (["--steps", "1", "--population", "8", "--width", "16", "--rank", "0"], "rank"),
    (["--steps", "1", "--population", "8", "--width", "16", "--alpha", "0"], "alpha"),
    (["--steps", "-1", "--population", "8", "--width", "16"], "steps"),
])
def test_bad_settings(monkeypatch, capsys, text_file, tmp_path, args, fragment):
    """Impossible settings (odd population, width 10, rank 0, alpha 0, negative steps) are refused
    before anything is written."""
    code, _, err = run_main(monkeypatch, capsys, "pretrain", text_file, *args, "--out", tmp_path / "run")
    assert code == 2
    assert_one_error_line(err, fragment)
    assert not (tmp_path / "run").exists()


def test_not_a_checkpoint_folder(monkeypatch, capsys, tmp_path):
    """sample and eval on a folder without checkpoints."""
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("hi")
    for cmd in (["sample", tmp_path / "plain"], ["eval", tmp_path / "plain", tmp_path / "plain" / "notes.txt"]):
        code, _, err = run_main(monkeypatch, capsys, *cmd)
        assert code == 2
        assert_one_error_line(err, "no checkpoints")


def test_missing_checkpoint_path(monkeypatch, capsys, tmp_path):
    """`intlm sample` on a path that does not exist is refused in one line."""
    code, _, err = run_main(monkeypatch, capsys, "sample", tmp_path / "missing")
    assert code == 2
    assert_one_error_line(err, "does not exist")


def corrupt_copy(trained, tmp_path):
    """A copy of the trained run whose latest checkpoint has flipped bytes in its embedding chunk."""
    run, _ = trained
    copy = tmp_path / "corrupt"
    shutil.copytree(run, copy)
    chunks = [p for p in (copy / "step-00000002" / "embed").rglob("*") if p.is_file() and p.name != "zarr.json"]
    assert len(chunks) == 1
    data = bytearray(chunks[0].read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 8):
        data[i] ^= 0xFF
    chunks[0].write_bytes(bytes(data))
    return copy


def test_corrupt_checkpoint(monkeypatch, capsys, trained, tmp_path):
    """Flipped bytes in a chunk of the checkpoint named: sample and eval say it is corrupt, in one line."""
    copy = corrupt_copy(trained, tmp_path) / "step-00000002"
    _, text = trained
    for cmd in (["sample", copy, "--length", "5"], ["eval", copy, text]):
        code, out, err = run_main(monkeypatch, capsys, *cmd)
        assert code == 2
        assert_one_error_line(err, "corrupt")
        assert out == ""


def test_run_folder_with_a_corrupt_newest_checkpoint_falls_back(monkeypatch, capsys, trained, tmp_path):
    """On a run folder, sample and eval use the newest intact checkpoint and name the damaged one
    in one line; only when none is intact do they fail, with the newest one's error."""
    copy = corrupt_copy(trained, tmp_path)
    _, text = trained
    for cmd in (["sample", copy, "--length", "5"], ["eval", copy, text]):
        code, out, err = run_main(monkeypatch, capsys, *cmd)
        assert code == 0, err
        warnings = [line for line in err.splitlines() if not line.startswith("compressing the splits")]
        assert warnings == [f"warning: passed over a damaged checkpoint (checkpoint {copy}/step-00000002 "
                            f"is corrupt: content hash mismatch); using {copy}/step-00000001"]
    assert out.startswith("step 1:")
    shutil.rmtree(copy / "step-00000001")
    code, _, err = run_main(monkeypatch, capsys, "eval", copy, text)
    assert code == 2
    assert_one_error_line(err, "step-00000002", "corrupt")


def last_line_error(err, *fragments):
    """Exit paths that fail after the 'training ...' banner: the error is still exactly one line,
    the last one, and there is no traceback."""
    lines = err.strip().splitlines()
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], err
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[-1], err


def resume_wrong_width(trained, tmp_path):
    run, text = trained
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    return copy, ["pretrain", text, "--steps", "3", "--width", "32", "--out", copy, "--resume"]


def no_resume_into_checkpoints(trained, tmp_path):
    run, text = trained
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    return copy, ["pretrain", text, "--steps", "3", *TINY, "--out", copy]


@pytest.mark.parametrize("case, fragments", [
    (resume_wrong_width, ("settings differ", "width")),  # an explicit --width other than the checkpoint's
    (no_resume_into_checkpoints, ("already holds checkpoints", "--resume")),  # a fresh run into used folder
], ids=["resume-mismatched-width", "checkpoints-without-resume"])
def test_run_folder_refused(monkeypatch, capsys, trained, tmp_path, case, fragments):
    """Run-folder mistakes are refused with an error naming the cause, and write no checkpoint."""
    copy, args = case(trained, tmp_path)
    code, _, err = run_main(monkeypatch, capsys, *args)
    assert code == 2
    last_line_error(err, *fragments)
    assert not (copy / "step-00000003").exists()


@pytest.mark.parametrize("case", [resume_wrong_width, no_resume_into_checkpoints])
def test_run_folder_errors_are_the_only_stderr_line(monkeypatch, capsys, trained, tmp_path, case):
    """The CLI contract: a user mistake prints exactly one line on stderr, the error."""
    _, args = case(trained, tmp_path)
    code, _, err = run_main(monkeypatch, capsys, *args)
    assert code == 2
    assert_one_error_line(err)


@pytest.mark.parametrize("args,fragment", [
    (["pretrain", "--no-such-option"], "no-such-option"),
    (["pretrain", "--steps", "many"], "'many' is not a valid integer"),
    (["sample"], "Missing argument"),
    (["bench", "--width", "a,b"], "comma-separated integers"),
    (["frobnicate"], "No such command"),
])
def test_usage_errors_are_one_line(monkeypatch, capsys, args, fragment):
    """Click's own usage errors are one `error:` line too (with the --help hint in it), exit 2."""
    code, _, err = run_main(monkeypatch, capsys, *args)
    assert code == 2
    assert_one_error_line(err, fragment)


@pytest.mark.parametrize("args,fragment", [
    (["--steps", "1", "--minutes", "nan"], "--minutes"),  # --steps: the old code then stopped, not hung
    (["--steps", "1", "--minutes", "inf"], "--minutes"),
    (["--steps", "1", "--save-seconds", "-1"], "--save-seconds"),
    (["--steps", "1", "--save-seconds", "nan"], "--save-seconds"),
    (["--steps", "1", "--eval-seconds", "nan"], "--eval-seconds"),
    (["--steps", "1", "--sample-every", "nan"], "--sample-every"),
])
def test_pretrain_refuses_non_finite_and_negative_times(monkeypatch, capsys, text_file, tmp_path, args, fragment):
    """nan/inf minutes never stopped; nan or negative save/eval intervals were taken as given."""
    code, _, err = run_main(monkeypatch, capsys, "pretrain", text_file, *TINY, *args, "--out", tmp_path / "run")
    assert code == 2
    assert_one_error_line(err, fragment)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args,fragment", [
    (["--seed", str(2**64)], "--seed"),
    (["--seed", str(2**63)], "--seed"),
    (["--temperature", "nan"], "--temperature"),
    (["--temperature", "-1"], "--temperature"),
])
def test_sample_refuses_bad_values(monkeypatch, capsys, trained, args, fragment):
    """--seed 2**64 acted as seed 0, --temperature nan ended in a traceback."""
    code, out, err = run_main(monkeypatch, capsys, "sample", trained[0], *args)
    assert code == 2
    assert_one_error_line(err, fragment)
    assert out == ""


def test_missing_array_metadata_is_one_line_without_warnings(trained, tmp_path):
    """A checkpoint whose array lost its zarr.json: one error line, no zarr warnings around it (a
    subprocess: pytest would catch the warnings itself)."""
    copy = tmp_path / "copy"
    shutil.copytree(trained[0], copy)
    (copy / "step-00000002" / "embed" / "zarr.json").unlink()
    done = subprocess.run([sys.executable, "-m", "intlm.cli", "sample", str(copy / "step-00000002")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert_one_error_line(done.stderr, "corrupt")


def test_resume_without_checkpoints_is_refused(monkeypatch, capsys, text_file, tmp_path):
    """A mistyped --out with --resume trained from scratch; now it is refused unless --resume-or-start."""
    code, _, err = run_main(monkeypatch, capsys, "pretrain", text_file, *TINY, "--steps", "1", "--resume",
                            "--out", tmp_path / "typo")
    assert code == 2
    assert_one_error_line(err, "no checkpoint", "--resume-or-start")
    assert not (tmp_path / "typo").exists()
    code, _, err = run_main(monkeypatch, capsys, "pretrain", text_file, *TINY, "--steps", "1", "--resume-or-start",
                            "--out", tmp_path / "typo")
    assert code == 0, err
    assert (tmp_path / "typo" / "step-00000001").is_dir()


# --- errors through CliRunner: the raw IntlmError ------------------------------------------------

def test_cli_raises_intlm_error_for_user_mistakes(runner, tmp_path, text_file):
    """Without main()'s wrapper the group raises IntlmError (one line), never another exception."""
    (tmp_path / "empty.txt").write_bytes(b"")
    cases = [
        ["pretrain", str(tmp_path / "nope.txt"), "--steps", "1", *TINY, "--out", str(tmp_path / "r")],
        ["pretrain", str(tmp_path / "empty.txt"), "--steps", "1", *TINY, "--out", str(tmp_path / "r")],
        ["pretrain", str(text_file), "--steps", "1", "--population", "7", "--out", str(tmp_path / "r")],
        ["pretrain", str(text_file), "--steps", "1", "--width", "10", "--out", str(tmp_path / "r")],
        ["sample", str(tmp_path)],
    ]
    for args in cases:
        result = runner.invoke(cli, args)
        assert isinstance(result.exception, IntlmError), (args, result.exception)
        assert "\n" not in str(result.exception)


# --- the real console script -----------------------------------------------------------------------

def test_console_script_error(tmp_path):
    """The installed `intlm` script: a missing corpus exits 2 with one 'error:' line and no traceback."""
    env = {**os.environ, "INTLM_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([*intlm_script(), "pretrain", str(tmp_path / "missing.txt"), "--steps", "1", *TINY,
                           "--out", str(tmp_path / "run")], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2
    assert_one_error_line(done.stderr, "does not exist")
    assert done.stdout == ""


def test_console_script_odd_population(tmp_path, text_file):
    """The installed script refuses --population 7 (antithetic pairs need an even count) in one line."""
    env = {**os.environ, "INTLM_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([*intlm_script(), "pretrain", str(text_file), "--population", "7", "--steps", "1"],
                          capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert done.returncode == 2
    assert_one_error_line(done.stderr, "population", "even")


# --- happy paths ---------------------------------------------------------------------------------

def test_prepare(runner, tmp_path, text_file):
    """`intlm prepare` writes a store and reports its split."""
    out = tmp_path / "corpus.zarr"
    result = runner.invoke(cli, ["prepare", str(text_file), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "zarr.json").is_file()
    assert "train bytes" in result.output and "validation bytes" in result.output


def test_pretrain_writes_run(trained):
    """`intlm pretrain CORPUS --steps 2 ...` wrote step-00000002 and a log."""
    out, _ = trained
    assert (out / "step-00000002" / "zarr.json").is_file()
    assert (out / "log.jsonl").is_file()
    assert len((out / "log.jsonl").read_text().splitlines()) == 3  # 2 steps + final


def test_pretrain_resume_continues(runner, trained, tmp_path):
    """--resume without settings keeps the checkpoint's (tiny) config and continues to --steps."""
    run, text = trained
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    result = runner.invoke(cli, ["pretrain", str(text), "--steps", "3", "--out", str(copy), "--resume"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert (copy / "step-00000003").is_dir()


def test_sample_deterministic(runner, trained):
    """Same seed, same text; another seed, other text; temperature 0 is greedy (seed-independent)."""
    out, _ = trained

    def sample(*extra):
        result = runner.invoke(cli, ["sample", str(out), "--length", "20", *extra])
        assert result.exit_code == 0, (result.output, result.exception)
        return result.output

    a, b, c = sample("--seed", "1"), sample("--seed", "1"), sample("--seed", "2")
    assert a == b
    assert a != c
    g1, g2 = sample("--temperature", "0", "--seed", "1"), sample("--temperature", "0", "--seed", "2")
    assert g1 == g2
    # the prompt is read before the model writes: what follows it is the generator's continuation of it
    from intlm.run import load_run
    from intlm.sample import generate

    run, _ = load_run(out)
    result = runner.invoke(cli, ["sample", str(out), "--length", "20", "--seed", "1", "--prompt", "the ", "--raw"])
    assert result.stdout_bytes == b"the " + bytes(generate(run.params, run.cfg, b"the ", 20, 16, 0, 1))
    assert result.stdout_bytes[4:] != bytes(generate(run.params, run.cfg, b"", 20, 16, 0, 1))


def test_sample_generates_requested_length(trained):
    """generate() returns exactly the requested number of bytes, identical for a seed."""
    from intlm.sample import generate
    from intlm.run import load_run

    out, _ = trained
    run, _ = load_run(out)
    a = bytes(generate(run.params, run.cfg, b"ab", 25, 16, 0, 3))
    assert len(a) == 25 and a == bytes(generate(run.params, run.cfg, b"ab", 25, 16, 0, 3))
    greedy = bytes(generate(run.params, run.cfg, b"ab", 10, 0, 0, 0))
    assert greedy == bytes(generate(run.params, run.cfg, b"ab", 10, 0, 0, 99))


def test_eval_prints_figures(runner, trained):
    """`intlm eval DIR CORPUS` prints validation, unigram and bigram bits/byte."""
    out, text = trained
    result = runner.invoke(cli, ["eval", str(out), str(text)])
    assert result.exit_code == 0, (result.output, result.exception)
    line = result.output.strip()
    assert line.startswith("step 2:")
    for word in ("validation", "unigram", "bigram", "bits/byte"):
        assert word in line


# --- sample output -------------------------------------------------------------------------------

def test_sample_prompt_that_is_not_utf8(monkeypatch, capsys, trained):
    """A prompt byte 0xff (the shell passes it as a surrogate escape) ended in a traceback; now the
    model reads that byte, the text shows U+FFFD and --raw writes the byte itself."""
    code, out, err = run_main(monkeypatch, capsys, "sample", trained[0], "--prompt", "\udcffab", "--length", "0")
    assert (code, out, err) == (0, "\ufffdab\n", "")
    result = CliRunner().invoke(cli, ["sample", str(trained[0]), "--prompt", "\udcffab", "--length", "0", "--raw"])
    assert result.exit_code == 0 and result.stdout_bytes == b"\xffab"


def test_sample_shows_control_bytes_escaped_and_stops_at_a_document_end(trained):
    """The raw bytes hold 0s and control bytes (the model is barely trained); the default output is
    those bytes up to the first 0 (the end of a document) with every control byte but newline and
    tab escaped, so nothing reaches the terminal raw."""
    from intlm.sample import generate
    from intlm.run import load_run

    run, _ = load_run(trained[0])
    raw = bytes(generate(run.params, run.cfg, b"", 3000, 16, 0, 1))
    assert 0 in raw and any(b < 32 and b not in (9, 10) for b in raw[:raw.index(0)])
    runner = CliRunner()
    got_raw = runner.invoke(cli, ["sample", str(trained[0]), "--length", "3000", "--seed", "1", "--raw"])
    assert got_raw.stdout_bytes == raw
    shown = runner.invoke(cli, ["sample", str(trained[0]), "--length", "3000", "--seed", "1"]).stdout_bytes
    text = shown.decode()
    assert text == escape_controls(raw[:raw.index(0)].decode("utf-8", errors="replace")) + "\n"
    assert not any(ord(c) < 32 and c not in "\n\t" or 127 <= ord(c) < 160 for c in text)


def test_escape_controls():
    assert escape_controls("a\x1b[31mb\x07\x00\r\n\tc\x9b\x7f") == "a\\x1b[31mb\\x07\\x00\\r\n\tc\\x9b\\x7f"


def test_sample_streams_its_output(trained):
    """--length 1000000000 printed nothing until the end (hours); now the first bytes arrive at once."""
    proc = subprocess.Popen([sys.executable, "-m", "intlm.cli", "sample", str(trained[0]), "--length", "1000000000",
                             "--raw"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, "no output within 60 s"
        assert os.read(proc.stdout.fileno(), 64)
        assert proc.poll() is None  # still generating
    finally:
        proc.kill()
        proc.wait()


# --- the corpus a run was trained on ---------------------------------------------------------------

def test_eval_from_another_folder_finds_the_corpus(monkeypatch, capsys, tmp_path):
    """The checkpoint stored the corpus path as typed (here relative, through a relative cache
    folder), so `intlm eval RUN` from elsewhere failed; now it is absolute. If that corpus is gone,
    the error says to name one, and `eval RUN CORPUS` does."""
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    (work / "text.txt").write_bytes(text_bytes(400, seed=5))
    monkeypatch.chdir(work)
    monkeypatch.setenv("INTLM_CACHE", "cache")
    code, _, err = run_main(monkeypatch, capsys, "pretrain", "text.txt", "--steps", "1", *TINY, "--out", "run")
    assert code == 0, err
    monkeypatch.chdir(elsewhere)
    code, out, err = run_main(monkeypatch, capsys, "eval", work / "run")
    assert code == 0, err
    assert out.startswith("step 1:")
    shutil.rmtree(work / "cache")
    code, _, err = run_main(monkeypatch, capsys, "eval", work / "run")
    assert code == 2
    assert_one_error_line(err, "is gone", "intlm eval RUN CORPUS")
    code, out, err = run_main(monkeypatch, capsys, "eval", work / "run", work / "text.txt")
    assert code == 0 and out.startswith("step 1:"), err


# --- signals ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_saves_a_checkpoint_and_says_where(tmp_path, text_file, signum):
    """SIGINT or SIGTERM in the middle of a run: the step in progress finishes, a checkpoint of it is
    written although the next periodic save is far off, one line names it, exit 128 + signal."""
    env = {**os.environ, "INTLM_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "intlm.cli", "pretrain", str(text_file), *TINY, "--steps", "100000",
                             "--backend", "numpy", "--save-seconds", "1000", "--out", str(out)],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        wait_for_log_records(out / "log.jsonl", 3)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signum
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    saved = out / f"step-{steps[-1]:08d}"
    assert err.splitlines()[-1] == f"stopped by {signal.Signals(signum).name}: checkpoint saved in {saved}"
    assert [p.name for p in out.glob("step-*")] == [saved.name]
    from intlm.run import load_run

    assert load_run(out)[0].step == steps[-1]


def wait_for_log_records(log, n, timeout=60):
    """Wait until the run's log holds ``n`` records (training is under way)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and log.read_bytes().count(b"\n") >= n:
            return
        time.sleep(0.02)
    raise AssertionError(f"{log} did not reach {n} records in {timeout} s")
