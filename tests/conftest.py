"""Shared fixtures for the integer-core tests: tiny configs, random models, backends, a tiny corpus.

Everything here is deliberately small (width 16, a handful of members, windows of a few bytes) so
the whole suite, Numba compilation included, runs in a few minutes on two busy cores.
"""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

from intlm import model
from intlm.config import Config

# One hypothesis profile for the suite: no per-example deadline. These tests check integer results,
# not timings, and on a shared 2-core machine an example's time says nothing about the code.
settings.register_profile("intlm", deadline=None)
settings.load_profile("intlm")

TINY = Config(width=16, layers=1, mlp_ratio=1, population=8, rank=1, window=4, sigma_shift=4,
              fitness="sign", alpha_q16=32768, alpha_halflife=200, momentum_shift=0, pair_state="mean", seed=3)


def tiny_config(**changes) -> Config:
    """A checked tiny Config, with the given fields changed."""
    return dataclasses.replace(TINY, **changes).check()


def random_params(cfg: Config, rng) -> dict:
    """Random int8 parameters in [-127, 127] with a good share of saturating +-127 entries."""
    out = {}
    for name, p in model.init_params(cfg).items():
        v = rng.integers(-127, 128, p.shape)
        sat = rng.random(p.shape) < 0.1
        v[sat] = rng.choice([-127, 127], int(sat.sum()))
        out[name] = v.astype(np.int8)
    return out


def random_state(cfg: Config, rows: int, rng) -> np.ndarray:
    return rng.integers(-127, 128, model.state_shape(cfg, rows)).astype(np.int8)


def random_tokens(rows: int, length: int, rng, zero_rate: float = 0.1) -> np.ndarray:
    """Random bytes with some 0 bytes (document starts) sprinkled in."""
    tok = rng.integers(1, 256, (rows, length)).astype(np.uint8)
    tok[rng.random((rows, length)) < zero_rate] = 0
    return tok


def text_bytes(n_words: int, seed: int) -> bytes:
    """Deterministic pseudo-English text (words from a small vocabulary, lines of 10 words)."""
    words = ("the of and to in is was that he for it with as his on be at by had are but from "
             "or have an they which one you were her all she there would their we him been has "
             "when who will more no if out so said what up its about into than them can only").split()
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(words), n_words)
    lines = [" ".join(words[i] for i in picks[j:j + 10]) for j in range(0, n_words, 10)]
    return ("\n".join(lines) + "\n").encode()


def checkpoint_state(folder) -> dict:
    """Every file of a checkpoint folder by relative path, with its bytes."""
    folder = Path(folder)
    out = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    assert out
    return out


def same_bytes_three_ways(tmp_path, train, steps: int) -> Path:
    """``train(out, steps, backend, resume)`` (a run of ``steps`` in folder ``out``) on NumPy, on
    Numba, and on Numba stopped half way and resumed: all three must write the same last checkpoint,
    byte for byte. Returns the Numba run's folder."""
    train(tmp_path / "numpy", steps, "numpy", False)
    train(tmp_path / "numba", steps, "numba", False)
    train(tmp_path / "split", steps // 2, "numba", False)
    train(tmp_path / "split", steps, "numba", True)
    last = f"step-{steps:08d}"
    want = checkpoint_state(tmp_path / "numba" / last)
    assert checkpoint_state(tmp_path / "numpy" / last) == want, "NumPy and Numba differ"
    assert checkpoint_state(tmp_path / "split" / last) == want, "a resumed run differs from an uninterrupted one"
    return tmp_path / "numba"


def dead_pid() -> int:
    """The pid of a process that has already exited (and been reaped)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory):
    """No test touches the user's corpus cache (~/.cache/intlm): the session, and every process a
    test starts, caches corpora in a folder of its own unless a test names another."""
    old = os.environ.get("INTLM_CACHE")
    os.environ["INTLM_CACHE"] = str(tmp_path_factory.mktemp("intlm-cache"))
    yield
    if old is None:
        del os.environ["INTLM_CACHE"]
    else:
        os.environ["INTLM_CACHE"] = old


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """A test's own corpus cache (INTLM_CACHE), empty at its start: the folder."""
    monkeypatch.setenv("INTLM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def cfg_factory():
    return tiny_config


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(scope="session")
def numpy_backend():
    from intlm import backends

    return backends.get("numpy")


@pytest.fixture(scope="session")
def numba_backend():
    from intlm import backends

    be = backends.get("numba")
    assert be.name == "numba"
    return be


@pytest.fixture(scope="session")
def text_folder(tmp_path_factory):
    """A folder of 4 small text documents (3 train, 1 validation after preparing)."""
    folder = tmp_path_factory.mktemp("text")
    for i in range(4):
        (folder / f"doc{i}.txt").write_bytes(text_bytes(300 if i < 3 else 200, seed=i))
    return folder


@pytest.fixture(scope="session")
def corpus(tmp_path_factory, text_folder):
    """The prepared corpus store of ``text_folder``, opened."""
    from intlm import data

    path = data.prepare([str(text_folder)], tmp_path_factory.mktemp("store") / "corpus.zarr")
    return data.open_store(path)


def run_main(monkeypatch, capsys, *args):
    """Call cli.main() as the console script would; return (exit code, stdout, stderr).

    main() returns on success and exits on errors."""
    from intlm import cli

    monkeypatch.setattr(sys, "argv", ["intlm", *map(str, args)])
    try:
        cli.main()
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err
