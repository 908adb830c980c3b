"""Tests of the ``intlm`` command: one clear ``error:`` line (exit 2, no traceback) for every user
mistake, through ``main()`` and the installed console script, and the happy paths."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from intlm import cli as cli_module
from intlm.cli import cli
from intlm.errors import IntlmError

from conftest import text_bytes

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
    """A 2-step run made through the CLI, shared by the sample/eval/corruption tests."""
    root = tmp_path_factory.mktemp("cli-run")
    text = root / "corpus.txt"
    text.write_bytes(text_bytes(400, seed=6))
    out = root / "run"
    old = os.environ.get("INTLM_CACHE")
    os.environ["INTLM_CACHE"] = str(root / "cache")
    try:
        result = CliRunner().invoke(cli, ["pretrain", str(text), "--steps", "2", *TINY, "--out", str(out)])
    finally:
        if old is None:
            del os.environ["INTLM_CACHE"]
        else:
            os.environ["INTLM_CACHE"] = old
    assert result.exit_code == 0, result.output
    return out, text


def run_main(monkeypatch, capsys, *args):
    """Call cli.main() as the console script would; return (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["intlm", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        cli_module.main()
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


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
    """Flipped bytes in a chunk: sample and eval say the checkpoint is corrupt, in one line."""
    copy = corrupt_copy(trained, tmp_path)
    _, text = trained
    for cmd in (["sample", copy, "--length", "5"], ["eval", copy, text]):
        code, out, err = run_main(monkeypatch, capsys, *cmd)
        assert code == 2
        assert_one_error_line(err, "corrupt")
        assert out == ""


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


def test_usage_errors_exit_2(monkeypatch, capsys):
    """Click's own usage errors (unknown option) also exit 2 without a traceback."""
    code, _, err = run_main(monkeypatch, capsys, "pretrain", "--no-such-option")
    assert code == 2
    assert "Traceback" not in err and "no-such-option" in err


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
    p = sample("--seed", "1", "--prompt", "the ")
    assert p.startswith("the ")


def test_sample_generates_requested_length(trained):
    """generate() returns exactly the requested number of bytes, identical for a seed."""
    from intlm.sample import generate
    from intlm.train import load_run

    out, _ = trained
    run, _ = load_run(out)
    a = generate(run.params, run.cfg, b"ab", 25, 16, 0, 3)
    assert len(a) == 25 and a == generate(run.params, run.cfg, b"ab", 25, 16, 0, 3)
    greedy = generate(run.params, run.cfg, b"ab", 10, 0, 0, 0)
    assert greedy == generate(run.params, run.cfg, b"ab", 10, 0, 0, 99)


def test_eval_prints_figures(runner, trained):
    """`intlm eval DIR CORPUS` prints validation, unigram and bigram bits/byte."""
    out, text = trained
    result = runner.invoke(cli, ["eval", str(out), str(text)])
    assert result.exit_code == 0, (result.output, result.exception)
    line = result.output.strip()
    assert line.startswith("step 2:")
    for word in ("validation", "unigram", "bigram", "bits/byte"):
        assert word in line
