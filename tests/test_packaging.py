"""What an install gets: pyproject's promises (the Python it needs, packages found rather than
listed, matplotlib only in the plot and test extras), the one line that names the plot extra when
matplotlib is missing, and outputs the CLI writes by default landing where git ignores them.
(.ci/run builds the wheel and trains from a fresh virtual environment.)"""

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import setuptools

import intlm

from conftest import run_main
from test_cli import assert_one_error_line

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_requires_python_is_what_installs():
    """zarr 3 needs Python 3.11, and tomllib (this test) is 3.11's."""
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"


def test_packages_are_found_not_listed():
    """No hand-kept list (it once left out intlm.optimizers, and a wheel failed on import): every
    package under intlm/ is found, the CUDA sources among them through the intlm/kernels link."""
    tool = PYPROJECT["tool"]["setuptools"]
    assert "packages" not in tool or isinstance(tool["packages"], dict)
    assert tool["packages"]["find"]["include"] == ["intlm*"]
    found = set(setuptools.find_namespace_packages(str(ROOT), include=["intlm*"]))
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "intlm").rglob("__init__.py")}
    assert on_disk <= found and {"intlm.optimizers", "intlm.kernels"} <= found
    assert (ROOT / "intlm" / "kernels" / "noise.cu").is_file()


def test_matplotlib_is_an_extra():
    project = PYPROJECT["project"]
    assert not any(d.startswith("matplotlib") for d in project["dependencies"])
    extras = project["optional-dependencies"]
    assert any(d.startswith("matplotlib") for d in extras["plot"])
    assert any(d.startswith("matplotlib") for d in extras["test"])  # the plot tests run
    assert project["dynamic"] == ["version"] and intlm.__version__


@pytest.fixture
def run_dir(tmp_path):
    """A run folder with a log of two steps (no checkpoint: the plot then has no baselines)."""
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    records = [{"step": 1, "elapsed_s": 1.0, "train_bpb": 7.0, "val_bpb_sample": 6.5},
               {"step": 2, "elapsed_s": 2.0, "train_bpb": 6.0, "val_bpb": 5.5, "final": True}]
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run


def test_without_matplotlib_plot_is_one_line_naming_the_extra(monkeypatch, capsys, run_dir):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    code, out, err = run_main(monkeypatch, capsys, "plot", run_dir)
    assert code == 2 and out == ""
    assert_one_error_line(err, "intlm[plot]")
    assert not (run_dir / "curve.png").exists()


def test_plot_writes_into_the_run_folder_by_default(monkeypatch, capsys, run_dir):
    """The figure lands beside the run's log (runs/ is git-ignored), not in the current folder."""
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(run_dir.parent.parent)
    code, out, _ = run_main(monkeypatch, capsys, "plot", "runs/r")
    assert code == 0 and out.strip() == str(Path("runs/r/curve.png"))
    assert (run_dir / "curve.png").is_file()


@pytest.mark.parametrize("path", ["runs/shakespeare/curve.png", "runs/notes/step-00000100/zarr.json",
                                  "runs/shakespeare/log.jsonl", "build/lib/intlm/cli.py", "dist/intlm-0.1.0.whl"])
@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="not a git checkout")
def test_what_the_cli_and_a_build_write_is_ignored(path):
    ignored = subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=ROOT)
    assert ignored.returncode == 0, f"{path} is not git-ignored"
