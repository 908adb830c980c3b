"""The progress output of a run: the terminal line fits the terminal (60 and 80 columns, and
narrower), a file or pipe gets plain lines, the rate and the time left follow the recent steps, the
"compiling kernels" line, the warm-up that keeps compiling out of the run's clock, the header."""

import fcntl
import io
import json
import os
import pty
import struct
import subprocess
import sys
import termios

import numpy as np
import pytest
from tqdm.utils import disp_len

from intlm import progress, train
from intlm.data import Corpus
from intlm.progress import Progress, compiling

from conftest import text_bytes, tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Terminal(io.StringIO):
    def isatty(self):
        return True


def drawn(text: str) -> list:
    """What each redraw left on the screen: the text between carriage returns and newlines."""
    return [part for line in text.split("\n") for part in line.split("\r") if part]


def drive(bar: Progress, figure_value=2.8134):
    """A run's worth of updates with extreme figures: a huge step, a huge rate, hours left, no
    validation yet, then a validation; then the final line."""
    bar.show(1, 0.5, figure_value, None, 1 << 40)
    for i in range(2, 40):
        bar.show(10 ** 7 + i, 1.0 * i, figure_value, 12.3456 if i > 5 else None, 1 << 40, fresh_val=i % 10 == 0)
    bar.show(10 ** 7 + 40, 40.0, figure_value, 2.5, 1 << 40, final=True)


@pytest.mark.parametrize("columns", [80, 60, 40, 14, 8])
def test_the_terminal_line_fits_the_terminal(columns, monkeypatch):
    """Every redraw is narrower than the terminal (a line that reaches the last column wraps on some
    terminals, and a wrapped line leaves a copy behind at every redraw); at 80 columns it shows
    every field and the bar, at 60 the step, the figures and the times."""
    monkeypatch.setattr(progress, "REFRESH_S", 0.0)
    for value in (2.8134, -123456.789):  # an objective's mean score can be long
        out = Terminal()
        drive(Progress(10 ** 8, 3600 * 30, stream=out, columns=lambda: columns), value)
        lines = drawn(out.getvalue())
        assert len(lines) > 30 and max(disp_len(line) for line in lines) <= columns - 1
        assert out.getvalue().endswith("\n")  # the final line stays, the shell prompt below it
        live, final = ([line for line in lines if "<" in line] or [None])[-1], lines[-1]
        if columns == 80 and value > 0:
            assert all(f in live for f in ("step 10000039", "train 2.813", "val 12.346", "tok/s", "00:39<", "|"))
            assert all(f in final for f in ("step 10000040", "val 2.500", "tok/s", "00:40", "|"))
        if columns == 60 and value > 0:
            assert all(f in live for f in ("step 10000039", "val 12.346", "00:39<"))
        assert lines[-1].startswith("step 10000040" if columns >= 14 else "10000040"[:columns - 1])

def test_the_line_follows_a_real_terminal_width():
    """Without ``columns``, the width is the terminal's own (a pseudo-terminal of 60 columns)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 60, 0, 0))
    stream = os.fdopen(slave, "w", encoding="utf-8")
    bar = Progress(1000, None, stream=stream)
    assert bar.tty
    for step in range(1, 5):
        bar.show(step, step * 0.9, 3.0, 2.9, 10 ** 6, final=step == 4)
    stream.close()
    output = b""
    while True:
        try:
            chunk = os.read(master, 1 << 16)
        except OSError:  # the slave side is closed
            break
        if not chunk:
            break
        output += chunk
    os.close(master)
    lines = drawn(output.decode("utf-8").replace("\r\n", "\n"))
    assert lines and max(disp_len(line) for line in lines) <= 59


def test_a_file_gets_plain_lines_at_validations_and_the_end():
    """Not a terminal (nohup, CI, a pipe): no carriage returns, no escape codes, a whole line at each
    fresh validation and at the end, every field in it; no line in between."""
    out = io.StringIO()
    drive(Progress(None, 600, stream=out, columns=lambda: 20))
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert len(lines) == 4  # validations at steps 10, 20, 30, and the final line
    assert all(line.startswith("step ") and "train 2.813" in line and "tok/s" in line for line in lines)
    assert "val 12.346" in lines[0] and lines[-1].startswith("step 10000040") and "val 2.500" in lines[-1]
    assert "<" in lines[0] and "<" not in lines[-1]  # time left while running; at the end, the time taken


def test_disabled_progress_writes_nothing():
    out = Terminal()
    drive(Progress(100, 60, enabled=False, stream=out))
    assert out.getvalue() == ""


def test_time_left_and_the_smoothed_rate():
    """--minutes: the time left is the budget less the elapsed time; --steps: the steps left at the
    recent pace; both: whichever ends first. The rate follows the recent steps: a slow spell long
    ago no longer drags it."""
    bar = Progress(None, 600, stream=io.StringIO())
    bar.show(1, 60.0, 3.0, None, 1000)
    assert bar.seconds_left(1, 60.0) == 540.0
    steps = Progress(100, None, stream=io.StringIO())
    for step in range(1, 11):
        steps.show(step, float(step), 3.0, None, 1000)
    assert steps.seconds_left(10, 10.0) == pytest.approx(90.0)
    both = Progress(100, 30, stream=io.StringIO())
    for step in range(1, 11):
        both.show(step, float(step), 3.0, None, 1000)
    assert both.seconds_left(10, 10.0) == pytest.approx(20.0)
    rate = Progress(None, None, stream=io.StringIO())
    rate.show(1, 1.0, 3.0, None, 1000)
    rate.show(2, 61.0, 3.0, None, 1000)  # one slow step
    for step in range(3, 200):  # then 0.5 s a step for about 100 s
        rate.show(step, 61.0 + 0.5 * (step - 2), 3.0, None, 1000)
    assert rate.step_s == pytest.approx(0.5, rel=0.01)  # 2000 tokens/s, not the average since the start
    assert rate.seconds_left(199, 160.0) is None and "2.00k tok/s" in rate.fields(199, 160.0, 3.0, None, 2000)["rate"]


def test_the_compiling_line_shows_only_while_numba_compiles():
    """A Numba compilation inside ``compiling`` is announced as it starts, then timed; a function
    already compiled (or loaded from the cache) says nothing, and neither does a disabled one."""
    import numba

    @numba.njit
    def twice(x):
        return 2 * x

    out = io.StringIO()
    with compiling(False, out):
        twice(1)
    assert out.getvalue() == ""
    twice_again = numba.njit(twice.py_func)
    with compiling(True, out):
        twice_again(1.5)
        twice_again(2.5)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("compiling kernels (first run only")
    assert lines[1].startswith("kernels compiled in ")
    quiet = io.StringIO()
    with compiling(True, quiet):
        twice_again(3.5)
    assert quiet.getvalue() == ""


WARM_THEN_STEP = """
import sys
import numba
from numba.core.registry import CPUDispatcher
sys.path.insert(0, sys.argv[1] + "/tests")
import gc
import json
from conftest import tiny_config, text_bytes
import numpy as np
from intlm import train
from intlm.backends import get
from intlm.config import PRETRAIN_CONTEXT
from intlm.data import Corpus
from intlm.run import Run

text = np.frombuffer(b"\\0" + text_bytes(200, seed=1), dtype=np.uint8)
corpus = Corpus(train=text, val=text[:300].copy(), meta={{}})
cfg = tiny_config(population=64, window=24, momentum_shift=2, **{changes})
be = get("numba")
task = train.CorpusFitness(corpus)
{warm_up}
def compiled():
    return {{(d.py_func.__qualname__, sig) for d in gc.get_objects() if isinstance(d, CPUDispatcher)
            for sig in d.signatures}}
before = compiled()
run = Run.fresh(cfg)
task.step(run, be)
train.evaluate(run.params, cfg, corpus.val, be)
print(sorted(map(str, compiled() - before)))
"""


IN_PROCESS, ALONE = "train.warm_up(task, cfg, corpus, be)", "train.warm_up_alone(json.dumps(cfg.to_json()))"


@pytest.mark.parametrize("changes,warm_up", [
    ("dict(context_bits=0, context_order=2)", IN_PROCESS), ("dict(context_bits=8, context_order=3)", IN_PROCESS),
    ("{**PRETRAIN_CONTEXT, 'context_bits': 8}", ALONE)], ids=["dense", "tables", "default-tables-alone"])
def test_the_warm_up_compiles_every_kernel_a_step_calls(changes, warm_up):
    """After train.warm_up (a throwaway run of fewer members and bytes), a step and a validation of
    the run's own config compile nothing more: compiling stays out of the run's clock and rate. So
    too after warm_up_alone, compile_apart's child, on its own few bytes."""
    code = WARM_THEN_STEP.format(changes=changes, warm_up=warm_up)
    done = subprocess.run([sys.executable, "-c", code, REPO], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


TOY_KERNELS = """
import numba


@numba.njit(cache=True)
def twice(x):
    return 2 * x


def warm(argument):
    twice(int(argument))
"""

COMPILED_APART = """
import sys
sys.path.insert(0, sys.argv[1])
from numba.core import event
from intlm import compile_apart
import toy_kernels

starts = []

class Count(event.Listener):
    def on_start(self, ev):
        starts.append(ev.data["dispatcher"].py_func.__name__)

    def on_end(self, ev):
        pass

with event.install_listener("numba:compile", Count()):
    compile_apart.warm_up(lambda: toy_kernels.warm("21"), "toy_kernels:warm", "21")
print(starts, toy_kernels.twice.stats.cache_hits)
"""


def test_the_first_warm_up_compiles_in_a_child(tmp_path):
    """With Numba's cache empty, compile_apart.warm_up compiles nothing itself: its first compile is
    refused before it starts, the child fills the cache, and the warm-up loads the kernel from it."""
    (tmp_path / "toy_kernels.py").write_text(TOY_KERNELS)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", COMPILED_APART, str(tmp_path)], capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['twice'] Counter({(int64,): 1})"  # one start (refused), then a cache hit
    assert any((tmp_path / "cache").rglob("*twice*.nbi"))


@pytest.mark.parametrize("compiling_bytes,apart", [(0, [True]), (1 << 40, [])])
def test_a_run_compiles_apart_only_when_it_needs_more_than_compiling(corpus, tmp_path, monkeypatch, compiling_bytes,
                                                                     apart):
    """pretrain sends its warm-up to compile_apart when its memory estimate is above compiling's peak."""
    from intlm import compile_apart

    chosen = []
    monkeypatch.setattr(compile_apart, "COMPILING_BYTES", compiling_bytes)
    monkeypatch.setattr(compile_apart, "warm_up", lambda throwaway, *child: chosen.append(True) or throwaway())
    train.pretrain(corpus, tiny_config(), tmp_path / "r", steps=1, progress=False, backend="numba")
    assert chosen == apart


def test_a_run_whose_child_fails_compiles_its_kernels_itself(monkeypatch):
    """Where the child cannot compile (here: it does not start), the run compiles what it needs."""
    import numba

    from intlm import compile_apart
    from intlm.backends import get

    calls = []

    class Fresh(train.CorpusFitness):  # a kernel no cache holds: njit without cache=True
        def warm_up(self, run, backend):
            calls.append(numba.njit(lambda x: x + 1)(41))
            super().warm_up(run, backend)

    monkeypatch.setattr(compile_apart.sys, "executable", "/nonexistent/python")
    cfg = tiny_config(population=64, window=24, context_bits=0)
    text = np.frombuffer(b"\0" + text_bytes(200, seed=1), dtype=np.uint8)
    corpus = Corpus(train=text, val=text[:300].copy(), meta={})
    train.warm_up(Fresh(corpus), cfg, corpus, get("numba"), apart=True)
    assert calls == [42]  # refused once, then compiled here


def test_the_header_is_short_and_the_log_has_the_config(corpus, tmp_path, capsys):
    """The header says model, parameters, population, corpus, backend and threads in a few short lines
    (no JSON); the run's first log record holds the full config and the backend."""
    cfg = tiny_config()
    train.pretrain(corpus, cfg, tmp_path / "r", steps=2, progress=True, backend="numpy")
    err = capsys.readouterr().err.splitlines()
    head = err[:6]
    assert head[0].startswith(f"training {tmp_path / 'r'} from step 0")
    assert [line.split()[0] for line in head[1:]] == ["model", "population", "corpus", "backend", "figures"]
    assert "parameters" in head[1] and "numpy, 1 thread" in head[4] and "{" not in "".join(head)
    records = [json.loads(line) for line in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    assert records[0]["config"] == cfg.to_json() and records[0]["backend"] == "numpy"
    assert "config" not in records[1]
