"""The README's commands run as written (issue 29).

Every `intlm ...` command in the README's shell code blocks runs, in README order, in one folder
where the quick start's own command (`intlm pretrain`, the default model with its context tables)
has trained first; sizes that would take minutes are shrunk (`--minutes` becomes a few steps, a
population 8, a sample 32 bytes, `intlm bench` one tiny setting) and the default corpus is a tiny
one in the cache the commands find by themselves. So a README edit that breaks a command (a
renamed option, a missing argument, a command the default model refuses) fails here. CI runs the
README's install and test commands themselves (`.ci/run`), checked by the last test.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from intlm.data import prepare

from conftest import text_bytes

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
QUICK_START_STEPS = 2

# Commands that fail because a feature does not yet accept the default model (context tables),
# to be emptied as each is fixed: the command as the README writes it, up to the option that names
# the feature -> (why, a fragment of the one error line it stops with). A listed command that fails
# otherwise, or passes, fails the test. Empty since the tables became a parameter kind (f3bbc5c):
# --anchor-decay, evolve --init and --mpi-reduce sums run on it, and bench has --context-bits.
XFAIL_DEFAULT_MODEL: dict[str, tuple[str, str]] = {}

# option -> the small value it takes here (lists of sizes for `intlm bench` too)
SMALL = {"--population": "8", "--length": "32", "--width": "16", "--window": "8", "--repeats": "1",
         "--processes": "1", "--layers": "1"}


def shell_lines(text: str) -> list[str]:
    """Every command line of the ```sh blocks, continuation lines joined."""
    lines = []
    for block in re.findall(r"^```(?:sh|bash|shell)\n(.*?)^```", text, flags=re.S | re.M):
        lines += [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]
    return lines


def readme_commands(text: str) -> list[tuple[str, list[str]]]:
    """(the line as written, its argv) of every `intlm` command, also those after `&&` and under
    `mpirun`, in README order; comments dropped."""
    out = []
    for line in shell_lines(text):
        tokens = shlex.split(line, comments=True)
        parts, part = [], []
        for t in tokens + ["&&"]:
            if t == "&&":
                parts.append(part)
                part = []
            else:
                part.append(t)
        out += [(line, p) for p in parts if p[:1] == ["intlm"] or (p[:1] == ["mpirun"] and "intlm" in p)]
    return out


def newest_step(run_dir: Path) -> int:
    steps = [int(p.name[5:]) for p in run_dir.glob("step-*") if p.name[5:].isdigit()]
    return max(steps, default=0)


def option(argv: list[str], name: str):
    return argv[argv.index(name) + 1] if name in argv else None


def shrink(argv: list[str], cwd: Path, home: Path) -> list[str]:
    """The command at test size, run by this interpreter from this checkout."""
    argv = [str(home) + t[1:] if t.startswith("~/") else t for t in argv]
    launch = []
    if argv[0] == "mpirun":
        launch = ["mpirun", "-n", "2"]
        argv = argv[argv.index("intlm"):]
    out = list(argv)
    for name, small in SMALL.items():
        if name in out:
            out[out.index(name) + 1] = small
    if "--minutes" in out:  # a budget in minutes becomes one in steps
        i = out.index("--minutes")
        out[i:i + 2] = ["--steps", "2"]
    if "--steps" in out:
        steps = min(int(option(out, "--steps")), 2)
        if "--resume" in out:  # the total, counting the steps the run has made
            steps = newest_step(cwd / option(out, "--out")) + 1
        out[out.index("--steps") + 1] = str(steps)
    elif out[1] in ("pretrain", "evolve"):
        out += ["--steps", str(QUICK_START_STEPS)]
    if out[1] == "bench":
        out += [o for name in ("--repeats", "--processes", "--population", "--window", "--width")
                if name not in out for o in (name, SMALL[name])]
    return [*launch, sys.executable, "-m", "intlm.cli", *out[1:]]


COMMANDS = readme_commands(README.read_text())


def known_failure(argv: list[str]):
    """(why, error fragment) when the command is on the list of known failures, else None."""
    written = shlex.join(argv)
    return next((v for key, v in XFAIL_DEFAULT_MODEL.items() if written.startswith(key)), None)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """The folder the commands run in: a home whose intlm cache holds a tiny default corpus, the
    files and folders the README names (notes.txt, my_texts/), and the quick start's own run (its
    first command) trained there."""
    root = tmp_path_factory.mktemp("readme")
    home = root / "home"
    docs = root / "docs"
    docs.mkdir()
    for i in range(10):  # ten documents: every 10th is validation
        (docs / f"play{i}.txt").write_bytes(text_bytes(300, seed=i))
    prepare([str(docs)], home / ".cache" / "intlm" / "shakespeare.zarr")
    (root / "notes.txt").write_bytes(text_bytes(2000, seed=11))
    texts = root / "my_texts"
    (texts / "drafts").mkdir(parents=True)
    for i in range(3):
        (texts / f"text{i}.txt").write_bytes(text_bytes(200, seed=20 + i))
    (texts / "drafts" / "draft.txt").write_bytes(text_bytes(50, seed=30))
    env = {k: v for k, v in os.environ.items() if k != "INTLM_CACHE"}
    env.update(HOME=str(home), MPLBACKEND="Agg", NUMBA_NUM_THREADS=env.get("NUMBA_NUM_THREADS", "2"),
               PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    first = COMMANDS[0][1]
    done = subprocess.run(shrink(first, root, home), cwd=root, env=env, capture_output=True, text=True,
                          timeout=600)
    return root, home, env, done


def test_the_quick_start_is_intlm_pretrain_and_trains_the_default_model(work):
    """The README's first command is the quick start's `intlm pretrain` (nothing more typed than a
    budget), and it trained the default model, context tables included, into runs/shakespeare."""
    root, _, _, done = work
    assert COMMANDS[0][1][:2] == ["intlm", "pretrain"] and "--context-bits" not in COMMANDS[0][1]
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    run = root / "runs" / "shakespeare"
    assert newest_step(run) == QUICK_START_STEPS
    cfg = json.loads((run / f"step-{QUICK_START_STEPS:08d}" / "zarr.json").read_text())["attributes"]["config"]
    assert (cfg["context_bits"], cfg["context_order"], cfg["width"], cfg["population"]) == (16, 5, 32, 8192)


@pytest.mark.parametrize("line,argv", [pytest.param(line, argv, id=shlex.join(argv)[:70]) for line, argv in COMMANDS[1:]])
def test_readme_command_runs(work, line, argv):
    """Exit status 0 and no traceback, at test size, after the commands before it (a known failure:
    its one error line, as listed)."""
    root, home, env, _ = work
    if argv[0] == "mpirun" and shutil.which("mpirun") is None:
        pytest.skip("mpirun is not on PATH (pip install 'intlm[mpi]')")
    done = subprocess.run(shrink(argv, root, home), cwd=root, env=env, capture_output=True, text=True,
                          timeout=600)
    assert "Traceback" not in done.stderr, done.stderr
    known = known_failure(argv)
    if known is None:
        assert done.returncode == 0, f"{line}\n{done.stderr}"
        return
    why, fragment = known
    assert done.returncode != 0, f"passes now: remove it from XFAIL_DEFAULT_MODEL ({why})"
    errors = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    assert errors and fragment in errors[0], f"{line}\nfails otherwise than listed ({why}):\n{done.stderr}"
    pytest.xfail(why)


def test_shrink_turns_minutes_into_steps_and_keeps_every_other_word(tmp_path):
    argv = shlex.split("intlm pretrain notes.txt --init runs/x --out runs/y --minutes 10 --population 512 --seed 3")
    cmd = shrink(argv, tmp_path, tmp_path)
    assert cmd[:3] == [sys.executable, "-m", "intlm.cli"]
    assert cmd[3:] == shlex.split("pretrain notes.txt --init runs/x --out runs/y --steps 2 --population 8 --seed 3")
    (tmp_path / "runs" / "y" / "step-00000004").mkdir(parents=True)
    resumed = shrink(shlex.split("intlm pretrain --out runs/y --resume --minutes 10"), tmp_path, tmp_path)
    assert resumed[3:] == shlex.split("pretrain --out runs/y --resume --steps 5")


def test_readme_commands_are_parsed_from_every_shell_block():
    text = ("intro\n```sh\npython3 -m pip install -e . && intlm pretrain\n```\n```sh\n"
            "intlm sample runs/a --prompt \"ROMEO.\"   # a comment\nmpirun -n 4 intlm pretrain \\\n    --out runs/m\n"
            "srun -n 64 intlm pretrain\n```\n```python\nintlm not a shell block\n```\n")
    assert [argv for _, argv in readme_commands(text)] == [
        ["intlm", "pretrain"], ["intlm", "sample", "runs/a", "--prompt", "ROMEO."],
        ["mpirun", "-n", "4", "intlm", "pretrain", "--out", "runs/m"]]


def test_ci_runs_the_readme_install_and_test_commands():
    """`.ci/run` runs the README's own install-and-test line, word for word."""
    readme_test = [line for line in shell_lines(README.read_text()) if "pytest" in line]
    assert readme_test, "the README shows no test command"
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert any(line.startswith(readme_test[0]) for line in ci if not line.startswith("#")), readme_test[0]
