"""The conventions a command-line tool is expected to follow: --version, a bare ``intlm`` that shows
the help and succeeds, ``--help`` in sections with the environment variables, --keep-last."""

import re

import pytest

import intlm
from intlm import checkpoint
from intlm.cli import cli

from conftest import run_main, text_bytes
from test_cli import assert_one_error_line

TINY = ["--population", "8", "--width", "16", "--window", "4", "--context-bits", "0"]


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("INTLM_CACHE", str(tmp_path / "cache"))


def sections(help_text: str) -> dict:
    """--help's sections: title -> the options (--name) listed under it, in order."""
    found, title = {}, None
    for line in help_text.splitlines():
        if re.fullmatch(r"[A-Z][A-Za-z -]*:", line):
            title = line[:-1]
            found[title] = []
        elif title is not None:
            m = re.match(r"\s{2}(?:-\w, )?(--[a-z-]+|[A-Z_]+)\b", line)
            if m:
                found[title].append(m.group(1))
    return found


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(monkeypatch, capsys, flag):
    code, out, err = run_main(monkeypatch, capsys, flag)
    assert (code, out, err) == (0, f"intlm {intlm.__version__}\n", "")


def test_bare_intlm_prints_the_help_and_succeeds(monkeypatch, capsys):
    code, out, err = run_main(monkeypatch, capsys)
    assert code == 0 and err == ""
    assert out.startswith("Usage: ") and "intlm pretrain" in out  # the quick start
    assert run_main(monkeypatch, capsys, "--help")[1] == out
    assert {"pretrain", "sample", "prepare"} <= set(sections(out)["Commands"] or re.findall(r"^  (\w+) ", out, re.M))
    assert sections(out)["Environment"] == ["NUMBA_NUM_THREADS", "INTLM_CACHE"]


@pytest.mark.parametrize("command,titles", [
    ("pretrain", ["Model", "Population and update", "Optimiser-specific", "Run and output", "Environment"]),
    ("evolve", ["Objective and sampling", "Population and update", "Run and output", "Environment"]),
])
def test_training_help_is_in_sections(monkeypatch, capsys, command, titles):
    """Every option of pretrain and evolve is listed once, in its section (none left to "Other
    options"); the environment variables close the help."""
    code, out, _ = run_main(monkeypatch, capsys, command, "--help")
    assert code == 0
    found = sections(out)
    assert list(found) == titles
    listed = [opt for title in titles[:-1] for opt in found[title]]
    options = [max(p.opts, key=len) for p in cli.commands[command].params if p.param_type_name == "option"]
    assert sorted(listed) == sorted(options + ["--help"])
    assert found["Environment"] == ["NUMBA_NUM_THREADS", "INTLM_CACHE"]
    if command == "pretrain":
        assert found["Model"][:2] == ["--width", "--layers"] and "--population" in found["Population and update"]
        assert set(found["Optimiser-specific"]) == {"--shared-rows", "--step-shift", "--spsa-rounding",
                                                   "--sepcma-damping", "--elite-shift"}
        assert {"--steps", "--minutes", "--out", "--keep-last"} <= set(found["Run and output"])


def steps_saved(folder) -> list:
    return [int(p.name.split("-")[1]) for p in checkpoint.list_checkpoints(folder)]


def test_keep_last_keeps_the_newest_checkpoints(tmp_path, monkeypatch, capsys):
    """--keep-last N deletes all but the newest N checkpoints as new ones are saved, old runs'
    included when resuming; 0 keeps every one; the default keeps 3; a resume continues from the newest."""
    text = tmp_path / "t.txt"
    text.write_bytes(text_bytes(300, seed=2))
    out = tmp_path / "run"
    base = ["pretrain", text, *TINY, "--save-seconds", "0", "--backend", "numpy", "--out", out]
    assert run_main(monkeypatch, capsys, *base, "--steps", "5", "--keep-last", "2")[0] == 0
    assert steps_saved(out) == [4, 5]
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]  # nothing half deleted left behind
    assert run_main(monkeypatch, capsys, *base, "--steps", "7", "--resume", "--keep-last", "0")[0] == 0
    assert steps_saved(out) == [4, 5, 6, 7]
    assert run_main(monkeypatch, capsys, *base, "--steps", "9", "--resume")[0] == 0
    assert steps_saved(out) == [7, 8, 9]
    code, _, err = run_main(monkeypatch, capsys, *base, "--steps", "10", "--resume", "--keep-last", "-1")
    assert code == 2
    assert_one_error_line(err, "--keep-last")
    assert steps_saved(out) == [7, 8, 9]


def test_prune_deletes_all_but_the_newest(tmp_path):
    for step in (1, 2, 3, 10):
        (tmp_path / f"step-{step:08d}").mkdir()
        (tmp_path / f"step-{step:08d}" / "zarr.json").write_text("{}")
    assert checkpoint.prune(tmp_path, 0) == [] and steps_saved(tmp_path) == [1, 2, 3, 10]
    assert [p.name for p in checkpoint.prune(tmp_path, 2)] == ["step-00000001", "step-00000002"]
    assert steps_saved(tmp_path) == [3, 10] and sorted(p.name for p in tmp_path.iterdir()) == [
        "step-00000003", "step-00000010"]
    assert checkpoint.prune(tmp_path, 5) == [] and steps_saved(tmp_path) == [3, 10]
