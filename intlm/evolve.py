"""``intlm evolve``: EGGROLL on a black-box objective of the text the population writes.

Each step every member continues a prompt by ``length`` bytes sampled through its own perturbation
(model.read_byte with the member's noise: the forward of the fitness, one byte at a time) with the
integer sampler of sample.py. The draws come from the counter hash of (seed, step, pair), never a
stateful generator, and both members of a pair continue the same prompt with the same draws, so the
difference of their scores is their perturbation's doing (as both read the same bytes when
pretraining). The objective, a plain function ``objective(samples: list[bytes]) -> list[int]``,
scores the samples (member order: pair p's + member, then its - member); its scores are the members'
fitnesses and the update is step.apply_fitness, pretraining's own. The context tables' sparse
update counts, for each pair, the rows either of its members read while writing (the two read
different bytes once their samples differ, and the pair's score difference depends on the noise of
every row either read). A sample's score is one number, not a log-likelihood per byte, so a config's
reads credit and mirrors (context.py) give way to window credit here; its tables' decay runs each
step as in pretraining.

The objective's module may define PROMPTS (a list of bytes or str): pair p continues
PROMPTS[p % len(PROMPTS)], after a document start; without it, DEFAULT_PROMPTS.

The generation runs the NumPy spec on the numpy and numba backends alike (no backend has a
generating kernel yet): it is the cost of a step, about as much as the forward of the same number of
bytes in NumPy. The backend makes the noise and the update.
"""

import hashlib
import importlib
import os
import reprlib
import sys

import numpy as np

from . import context
from .errors import IntlmError
from .model import Members, read_byte, state_shape
from .noise import stream_key
from .progress import Laps
from .sample import choose
from .signals import interruption
from .step import apply_fitness

DEFAULT_PROMPTS = (b"", b"\n", b"The ", b"I ", b"And ", b"What ", b"My lord, ", b"KING.\n")
PROMPT_MAX = 4096  # bytes a prompt may have
EVOLVE_TENSOR = (1 << 32) - 4  # the noise-key tensor id of the sampling draws (no parameter uses it)
SCORE_MAX = 1 << 62  # |score| at most this, so a pair's difference fits int64


def load_objective(spec: str) -> tuple:
    """(the function, the prompts) that ``spec`` ("package.module:function") names; the module is
    looked for on the Python path and in the current folder. Each failure is one IntlmError."""
    module_name, _, name = spec.partition(":")
    if not module_name or not name.isidentifier():
        raise IntlmError(f"--objective must be package.module:function, got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())  # a module beside the user, as `python -m` would find it
    try:
        module = importlib.import_module(module_name)
    except Exception as err:
        raise IntlmError(f"--objective: cannot import {module_name}: {_one_line(err)}") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise IntlmError(f"--objective: {module_name} has no function {name}")
    prompts = getattr(module, "PROMPTS", DEFAULT_PROMPTS)
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, (list, tuple)) or not prompts:
        raise IntlmError(f"--objective: {module_name}.PROMPTS must be a non-empty list of bytes or str")
    encoded = []
    for p in prompts:
        if not isinstance(p, (str, bytes)) or len(p) > PROMPT_MAX or b"\0" in _utf8(p):
            raise IntlmError(f"--objective: {module_name}.PROMPTS holds {reprlib.repr(p)}: each must be bytes or "
                             f"str of at most {PROMPT_MAX} bytes, without a 0 byte")
        encoded.append(_utf8(p))
    return function, tuple(encoded)


def _utf8(p) -> bytes:
    return p.encode() if isinstance(p, str) else p


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def prompt_text(cfg, prompts):
    """What each pair reads before it writes (pairs, columns) uint8: a document start, then its
    prompt; shorter prompts are padded in front with more 0 bytes, each of which starts the document
    again, so the padding changes nothing."""
    chosen = [prompts[p % len(prompts)] for p in range(cfg.pairs)]
    text = np.zeros((cfg.pairs, 1 + max(map(len, chosen))), np.uint8)
    for p, prompt in enumerate(chosen):
        text[p, text.shape[1] - len(prompt):] = np.frombuffer(prompt, np.uint8)
    return text


def sample_reads(backend, cfg, prompts, samples):
    """The context tables' rows each pair read while its members wrote ``samples`` (the sparse
    update's ``reads``: context.pair_reads), or None without tables (nothing is built then)."""
    if not context.state_rows(cfg):
        return None
    pair = np.arange(cfg.population) // 2
    written = np.frombuffer(b"".join(samples), np.uint8).reshape(cfg.population, -1)
    return context.pair_reads(backend, cfg, np.concatenate([prompt_text(cfg, prompts)[pair], written], axis=1))


def generate_population(params, cfg, noise, prompts, length: int, temperature_q4: int, top_k: int,
                        step: int) -> list:
    """Every member's ``length`` bytes (list of bytes, member order) continuing its pair's prompt
    through its own perturbation (``noise``: this step's, in model.make_noise's layout)."""
    rows, pair = cfg.population, np.arange(cfg.population) // 2
    text = prompt_text(cfg, prompts)
    members = Members(noise, cfg, rows)
    state = np.zeros(state_shape(cfg, rows), np.int64)
    for column in text.T:
        logits = read_byte(params, cfg, column[pair], state, members)
    # a pair's members draw alike
    keys = np.array([stream_key(cfg.seed, EVOLVE_TENSOR, step, p) for p in range(cfg.pairs)], np.uint64)[pair]
    out = np.zeros((rows, length), np.uint8)
    for i in range(length):
        out[:, i] = choose(logits, temperature_q4, top_k, keys, i)
        if i + 1 < length:
            logits = read_byte(params, cfg, out[:, i], state, members)
    return [row.tobytes() for row in out]


def check_scores(result, samples: int, spec: str, step: int) -> np.ndarray:
    """The objective's result as int64 scores, or one IntlmError saying what is wrong with it."""
    where = f"objective {spec} at step {step}"
    if isinstance(result, (str, bytes, dict)) or not hasattr(result, "__len__"):
        raise IntlmError(f"{where} returned {type(result).__name__}, not a list of integers")
    if len(result) != samples:
        raise IntlmError(f"{where} returned {len(result)} scores for {samples} samples")
    for i, v in enumerate(result):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise IntlmError(f"{where} returned {reprlib.repr(v)} ({type(v).__name__}) for sample {i}: "
                             f"scores must be integers")
        if not -SCORE_MAX <= v <= SCORE_MAX:
            raise IntlmError(f"{where} returned {v} for sample {i}: scores must be within +-2**62")
    return np.array([int(v) for v in result], dtype=np.int64)


class Objective:
    """A task for train.pretrain (as train.CorpusFitness): the members' scores under an objective of
    their samples. ``record``: what checkpoints record of it, so that a resume must use the same."""

    figure = "score"

    def __init__(self, spec: str, length: int = 32, temperature_q4: int = 16, top_k: int = 0):
        if not 1 <= length <= 100_000 or top_k < 0 or not 0 <= temperature_q4 <= 64 * 16:
            raise IntlmError("--length must be between 1 and 100000, --top-k >= 0, --temperature between 0 and 64")
        self.spec, self.length, self.temperature_q4, self.top_k = spec, length, temperature_q4, top_k
        self.function, self.prompts = load_objective(spec)
        prompts_hash = hashlib.sha256(b"".join(len(p).to_bytes(4, "little") + p for p in self.prompts))
        self.record = {"objective": spec, "length": length, "temperature_q4": temperature_q4, "top_k": top_k,
                       "prompts_sha256_16": prompts_hash.hexdigest()[:16]}

    def describe(self) -> str:
        return f"objective {self.spec}, {self.length}-byte samples from {len(self.prompts)} prompts"

    def warm_up(self, run, backend):
        """The update of a throwaway run (see train.warm_up), its kernels compiled; no objective called."""
        noise = backend.make_noise(run.cfg, run.step)
        reads = sample_reads(backend, run.cfg, self.prompts, [b"\n"] * run.cfg.population)
        apply_fitness(run, backend, noise, np.zeros(run.cfg.population, np.int64), Laps(), reads=reads)

    def step(self, run, backend, world=None, control=0) -> dict:
        if world is not None:
            raise IntlmError("intlm evolve runs in one process (not under MPI)")
        noise = backend.make_noise(run.cfg, run.step)
        samples = generate_population(run.params, run.cfg, noise, self.prompts, self.length, self.temperature_q4,
                                      self.top_k, run.step)
        scores = check_scores(self.score(samples, run.step), len(samples), self.spec, run.step)
        reads = sample_reads(backend, run.cfg, self.prompts, samples)
        stats = apply_fitness(run, backend, noise, scores, Laps(), reads=reads)
        return {"score_sum": sum(scores.tolist()), **stats, "control": control}  # exact: int64 could wrap

    def score(self, samples, step):
        try:
            return self.function(samples)
        except (Exception, SystemExit) as err:  # the objective is the user's code: any failure is one line
            if interruption(err) is not None:  # a second Ctrl-C while it ran: the signal's, not its failure
                raise interruption(err) from None
            raise IntlmError(f"objective {self.spec} at step {step} raised {_one_line(err)}") from None

    def figures(self, cfg, stats: dict) -> tuple:
        """(the step's log fields, its figure for the progress line, the bytes it generated)."""
        mean = stats["score_sum"] / cfg.population
        return {"score_mean": round(mean, 4)}, mean, cfg.population * self.length
