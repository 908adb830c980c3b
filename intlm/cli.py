"""The ``intlm`` command: prepare, pretrain, evolve, sample, export, eval, bench, plot.

User mistakes (bad corpus, bad checkpoint, impossible settings) print one ``error:`` line on stderr
and exit with status 2; nothing a user can cause ends in a traceback.
"""

import math
import os
import sys
import warnings
from pathlib import Path

import click
from click.core import ParameterSource

from . import __version__
from .backends import NAMES as BACKENDS
from .clihelp import Commands, Sections
from .config import CONTEXT_CREDITS, FITNESS_MODES, OPTIMIZERS, PAIR_STATES, PRETRAIN_CONTEXT, SPSA_ROUNDINGS, Config
from .errors import IntlmError, Stopped
from .signals import interruption, quiet_start_ends

DEFAULTS = Config()


def _corpus(source, stream=False):
    """The corpus ``source`` names (data.load_corpus), its splits read a piece at a time when ``stream``."""
    from .data import cache_dir_default, load_corpus

    return load_corpus(source, cache_dir_default(), stream)


@click.group(cls=Commands, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="intlm", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx):
    """Integer-only byte-level language models trained by EGGROLL evolution strategies.

    \b
    Quick start (Shakespeare's plays, 10 minutes on a CPU):
      intlm pretrain
      intlm sample runs/shakespeare --prompt "ROMEO."
    """
    if ctx.invoked_subcommand is None:  # bare `intlm`: the help, as --help shows it
        click.echo(ctx.get_help())


@cli.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(), help="Folder of the zarr store to write.")
@click.option("--include", multiple=True, metavar="GLOB", help="In folders, take only the files this glob matches "
              "(repeatable): without '/', a file's name or a folder's on its path ('*.py'); with '/', the path "
              "inside the folder ('docs/*.md').")
@click.option("--exclude", multiple=True, metavar="GLOB", help="In folders, leave out the files this glob matches "
              "(repeatable; as --include, e.g. '__pycache__', '*.min.js').")
def prepare(sources, out, include, exclude):
    """Turn text files or folders into a corpus store (train/validation split by document).

    In a folder, hidden files, empty files and binary files are left out (the binary ones counted
    in one line); a binary file named on its own is refused."""
    from .data import open_store, prepare as prepare_store

    path = prepare_store(list(sources), out, include, exclude)
    c = open_store(path)
    click.echo(f"{path}: {len(c.train)} train bytes, {len(c.val)} validation bytes "
               f"({c.meta['documents']['train']} + {c.meta['documents']['val']} documents)")


@cli.group(invoke_without_command=True)
@click.pass_context
def cache(ctx):
    """See and free the corpus cache: the default corpus, and the stores of text files and folders
    that pretrain, eval and plot prepare on the fly (in $INTLM_CACHE, default ~/.cache/intlm)."""
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


@cache.command(name="list")
def cache_list():
    """Each entry of the cache: its size and what it was prepared from."""
    from .cache import entries, human
    from .data import cache_dir_default

    folder = cache_dir_default()
    found = entries(folder)
    for path, size, what in found:
        click.echo(f"{human(size):>9}  {path.name}  {what}")
    click.echo(f"{human(sum(size for _, size, _ in found)):>9}  in {folder} ({len(found)} entries)")


@cache.command()
@click.option("--all", "everything", is_flag=True, help="The default corpus too (downloaded again when next needed).")
def clear(everything):
    """Delete the prepared text corpora (and with --all the default corpus): each is prepared again
    from its text when next used."""
    from .cache import clear as clear_cache, human
    from .data import cache_dir_default

    count, size = clear_cache(cache_dir_default(), everything)
    click.echo(f"freed {human(size)} ({count} entries) in {cache_dir_default()}")


CONFIG_OPTIONS = {  # CLI option -> Config field
    "population": "population", "width": "width", "layers": "layers", "mlp_ratio": "mlp_ratio",
    "rank": "rank", "window": "window", "sigma_shift": "sigma_shift", "fitness": "fitness",
    "alpha_halflife": "alpha_halflife", "momentum_shift": "momentum_shift", "pair_state": "pair_state",
    "seed": "seed", "anchor_decay": "anchor_decay",
    "optimizer": "optimizer", "shared_rows": "shared_rows", "step_shift": "step_shift", "elite_shift": "elite_shift",
    "spsa_rounding": "spsa_rounding", "sepcma_damping": "sepcma_damping",
    "context_bits": "context_bits", "context_order": "context_order", "context_logits": "context_logits",
    "context_credit": "context_credit", "context_mirror": "context_mirror", "context_decay": "context_decay",
}


def _options(*options):
    """Several click options as one decorator, listed by --help in this order."""
    def apply(f):
        for option in reversed(options):
            f = option(f)
        return f
    return apply


KEEP_LAST = 3  # checkpoints a run keeps: the newest, and two to fall back on should it be damaged
# how long a run trains, on what, and how it reports: pretrain and evolve alike
RUN_OPTIONS = _options(
    click.option("--steps", type=int, help="Stop after this many steps (total, counting resumed ones)."),
    click.option("--minutes", type=float, help="Stop after this many minutes of training (compiling the kernels, on a "
                 "first run, not counted) [10 if --steps is not given]."),
    click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
                 help="auto: numba, on every core (numpy: the readable reference; cupy: a CUDA GPU). Every "
                 "backend writes the same checkpoint bytes."),
    click.option("--resume", is_flag=True, help="Continue the newest intact checkpoint in --out (settings left out "
                 "are kept); refused when --out holds none."),
    click.option("--eval-seconds", type=float, default=30.0, show_default=True, help="Validation sample every N seconds."),
    click.option("--save-seconds", type=float, default=60.0, show_default=True, help="Checkpoint every N seconds."),
    click.option("--sample-every", type=float, default=120.0, show_default=True,
                 help="A line of text sampled from the model every N seconds of the progress output (0: never)."),
    click.option("--keep-last", type=click.IntRange(min=0), default=KEEP_LAST, show_default=True, metavar="N",
                 help="Keep the newest N checkpoints, deleting older ones as new ones are saved (0: keep all)."),
)
# the update's settings: a run started from a checkpoint (--init) may change them
UPDATE_OPTIONS = _options(
    click.option("--population", type=int, default=DEFAULTS.population, show_default=True,
                 help="Members (even: antithetic pairs)."),
    click.option("--rank", type=int, default=DEFAULTS.rank, show_default=True, help="Rank of each perturbation."),
    click.option("--sigma-shift", type=int, default=DEFAULTS.sigma_shift, show_default=True,
                 help="Perturbation scale 2**-S."),
    click.option("--fitness", type=click.Choice(FITNESS_MODES), default=DEFAULTS.fitness, show_default=True,
                 help="What a pair weighs in the update: the sign of its members' difference, that sign graded "
                 "by the difference's rank among the pairs, or the difference itself (scaled, clipped)."),
    click.option("--alpha", type=float, default=DEFAULTS.alpha_q16 / 65536, show_default=True,
                 help="Fraction of weights a step moves at the start."),
    click.option("--alpha-halflife", type=int, default=DEFAULTS.alpha_halflife, show_default=True,
                 help="Steps until that fraction halves."),
    click.option("--momentum-shift", type=int, default=DEFAULTS.momentum_shift, show_default=True,
                 help="Integer momentum over about 2**K steps (0: none)."),
    click.option("--anchor-decay", type=int, default=DEFAULTS.anchor_decay, show_default=True,
                 help="Anchored Weight Decay: pull each weight toward the run's starting weights (the --init "
                 "checkpoint's) at rate 2**-K per step (0: off)."),
    click.option("--seed", type=int, default=DEFAULTS.seed, show_default=True,
                 help="Seed of the initial weights and of the noise."),
)
INIT_OPTION = click.option("--init", type=click.Path(), metavar="CHECKPOINT_OR_RUN_DIR",
                           help="Start a new run (step 0, its own log and checkpoints) from this checkpoint's "
                           "weights (a run folder: its newest intact one), keeping its model shape; settings "
                           "left out are its own. The run records the checkpoint's path and content hash.")


RUN_SECTION = ["out", "steps", "minutes", "backend", "resume", "resume_or_start", "eval_seconds", "save_seconds",
               "sample_every", "keep_last", "mpi", "mpi_reduce", "help"]
UPDATE_SECTION = ["population", "rank", "sigma_shift", "fitness", "alpha", "alpha_halflife", "momentum_shift",
                  "anchor_decay", "seed"]


@cli.command(cls=Sections, sections=[
    ("Model", ["width", "layers", "mlp_ratio", "context_bits", "context_order", "context_logits", "context_credit",
               "context_mirror", "context_decay", "init"]),
    ("Population and update", ["optimizer", "window", "pair_state"] + UPDATE_SECTION),
    ("Optimiser-specific", ["shared_rows", "step_shift", "spsa_rounding", "sepcma_damping", "elite_shift"]),
    ("Run and output", RUN_SECTION)])
@click.argument("corpus", required=False)
@click.option("--out", type=click.Path(), help="Run folder for checkpoints and log.jsonl [runs/<corpus name>].")
@INIT_OPTION
@RUN_OPTIONS
@click.option("--resume-or-start", is_flag=True, help="As --resume, but start a fresh run when --out holds no checkpoint.")
@click.option("--width", type=int, default=DEFAULTS.width, show_default=True,
              help="Units of the GRU's state and of each embedding (a multiple of 16).")
@click.option("--layers", type=int, default=DEFAULTS.layers, show_default=True, help="GRU layers, each with its MLP.")
@click.option("--mlp-ratio", type=int, default=DEFAULTS.mlp_ratio, show_default=True,
              help="The MLP's hidden units as a multiple of the width.")
@click.option("--window", type=int, default=DEFAULTS.window, show_default=True, help="Bytes per member per step.")
@click.option("--pair-state", type=click.Choice(PAIR_STATES), default=DEFAULTS.pair_state, show_default=True,
              help="mean: a pair's members continue from their mean state; own: each keeps its own.")
@click.option("--context-bits", type=int, default=PRETRAIN_CONTEXT["context_bits"], show_default=True,
              help="0: no context tables; K: tables of 2**K rows indexed by the last 2 .. N bytes, added to the "
              "input; EGGROLL updates only the rows its windows read, the full-rank optimisers perturb and "
              "update every row (slow at large K).")
@click.option("--context-order", type=int, default=PRETRAIN_CONTEXT["context_order"], show_default=True,
              help="N: one context table for each of the last 2, 3, .. N bytes.")
@click.option("--context-logits", type=click.IntRange(0, 1), default=PRETRAIN_CONTEXT["context_logits"], show_default=True,
              help="1: each context row also adds 256 corrections to the next byte's logits (needs --context-bits).")
@click.option("--context-credit", type=click.Choice(CONTEXT_CREDITS), default=PRETRAIN_CONTEXT["context_credit"],
              show_default=True,
              help="What a table row's update counts: window: its pairs' whole-window fitness; reads: only the bytes "
              "from its first read on (its logit entries: only the bytes it predicted), as a sign; graded: the same sums, "
              "each credit graded by its size against the pair's mean byte difference. EGGROLL only.")
@click.option("--context-mirror", type=click.IntRange(0, 1), default=PRETRAIN_CONTEXT["context_mirror"], show_default=True,
              help="1: each member is scored again with its rows' logit perturbation negated (one more "
              "log-likelihood a byte); the logit entries are credited by the difference, everything else by "
              "the sum, so neither carries the other's noise (needs --context-logits 1, --context-credit reads or graded).")
@click.option("--context-decay", type=int, default=PRETRAIN_CONTEXT["context_decay"], show_default=True,
              help="0: off; K (7 to 16): the tables' entries decay toward zero at rate 2**-K a step, a 64th of the rows at a "
              "time, so contexts that few training bytes hold are not memorised. EGGROLL only.")
@UPDATE_OPTIONS
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=DEFAULTS.optimizer, show_default=True,
              help="eggroll: low-rank pairs; openes: full-rank pairs, same update; spsa: MeZO-style, a pair or "
              "a handful per step; sepcma: separable CMA-ES; cem: the cross-entropy method (README).")
@click.option("--shared-rows", type=int, default=DEFAULTS.shared_rows, show_default=True,
              help="sepcma, cem: streams every member reads per step.")
@click.option("--step-shift", type=int, default=DEFAULTS.step_shift, show_default=True,
              help="spsa: learning rate 2**-K per unit of noise; cem: the mean and spread move 2**-K of the way to the refit.")
@click.option("--spsa-rounding", type=click.Choice(SPSA_ROUNDINGS), default=DEFAULTS.spsa_rounding, show_default=True,
              help="spsa: stochastic: a step below one int8 unit moves a weight at random with that probability; "
              "carry: each weight keeps the part below one unit and adds it to the next step (2 bytes a weight).")
@click.option("--sepcma-damping", type=int, default=DEFAULTS.sepcma_damping, show_default=True,
              help="sepcma: d_sigma; the global step size adapts to the evolution path 1/d_sigma as fast.")
@click.option("--elite-shift", type=int, default=DEFAULTS.elite_shift, show_default=True,
              help="cem: keep the best population >> K members.")
@click.option("--mpi", is_flag=True, help="Train as one of several MPI processes (automatic under mpirun/srun; "
              "needs intlm[mpi]).")
@click.option("--mpi-reduce", type=click.Choice(["fitness", "sums"]), default="fitness", show_default=True,
              help="Under MPI, what the processes combine each step: the fitnesses alone (each process then "
              "regenerates all noise; bytes independent of the model) or the update sums of their own pairs "
              "(8 bytes per parameter; for many processes). The checkpoint bytes are the same.")
@click.pass_context
def pretrain(ctx, corpus, out, init, steps, minutes, backend, resume, resume_or_start, eval_seconds, save_seconds,
             sample_every, keep_last, alpha, mpi, mpi_reduce, **settings):
    """Train a model on CORPUS (text file, folder or prepared store; default: Shakespeare)."""
    from . import distributed
    from .train import pretrain as run_pretrain

    world = distributed.world(force=mpi)
    if world is not None:
        world.reduce = mpi_reduce
    out = Path(out or Path("runs") / (Path(corpus).stem if corpus else "shakespeare"))
    setup = (ctx, out, steps, minutes, resume, resume_or_start, (eval_seconds, save_seconds, sample_every), alpha,
             settings, init)
    if world is None:
        cfg, data = _run_setup(*setup), _corpus(corpus)
    else:  # rank 0 first (it may write the corpus cache), then the others; one error line for the job
        for turn in (True, False):
            err = None
            if world.primary == turn:
                try:
                    cfg, data = _run_setup(*setup), _corpus(corpus)
                except IntlmError as e:
                    err = e
            world.agree(err)
    if steps is None and minutes is None:
        minutes = 10.0
    run_pretrain(data, cfg, out, steps=steps, minutes=minutes, backend=backend, resume=resume,
                 resume_or_start=resume_or_start, eval_seconds=eval_seconds, save_seconds=save_seconds,
                 sample_seconds=sample_every, world=world, init=init, keep_last=keep_last)
    if world is None or world.primary:
        click.echo(f"checkpoints in {out}", err=True)


def _run_setup(ctx, out, steps, minutes, resume, resume_or_start, intervals, alpha, settings, init) -> Config:
    """The checked Config a run in ``out`` will train with, or the IntlmError that refuses it: the
    settings typed, over the checkpoint's when resuming or starting from ``init``."""
    from .run import resume_or_fresh

    if (steps is not None and steps < 0) or (minutes is not None and not 0 < minutes < math.inf):
        raise IntlmError("--steps must be >= 0 and --minutes a finite number > 0")
    if not all(seconds >= 0 for seconds in intervals):  # also refuses nan
        raise IntlmError("--eval-seconds, --save-seconds and --sample-every must be numbers >= 0")
    if not 0 < alpha <= 1:
        raise IntlmError(f"--alpha must be in (0, 1], got {alpha}")
    options = {o: f for o, f in CONFIG_OPTIONS.items() if o in settings}
    given = {f: settings[o] for o, f in options.items()}
    given["alpha_q16"] = max(1, round(alpha * 65536))
    typed = {f for o, f in options.items() if ctx.get_parameter_source(o) != ParameterSource.DEFAULT}
    if ctx.get_parameter_source("alpha") != ParameterSource.DEFAULT:
        typed.add("alpha_q16")
    # the table settings that only tables (or only EGGROLL's sparse update) have, left at their defaults:
    # no tables, no order, logits, credit, mirrors or decay (--context-bits 0 alone); the last three are EGGROLL's
    for field in ("context_order", "context_logits", "context_credit", "context_mirror", "context_decay"):
        if field not in typed and (not given.get("context_bits") or (field in ("context_credit", "context_mirror", "context_decay")
                                                                     and given.get("optimizer") != "eggroll")):
            given[field] = getattr(Config, field)
    if "context_mirror" not in typed and not (given.get("context_logits") and given.get("context_credit") != "window"):
        given["context_mirror"] = 0  # mirrors score the logit entries' reads credit: none without them
    # resuming or starting from a checkpoint, the settings the user did not type are the checkpoint's
    cfg = resume_or_fresh(out, Config(**given), resume, resume_or_start, typed=typed, peek=True, init=init).cfg
    return cfg.check()


@cli.command(cls=Sections, sections=[
    ("Objective and sampling", ["objective", "init", "corpus", "length", "temperature", "top_k"]),
    ("Population and update", UPDATE_SECTION),
    ("Run and output", RUN_SECTION)])
@click.option("--objective", metavar="PACKAGE.MODULE:FUNCTION",
              help="objective(samples: list[bytes]) -> list[int], one integer score per sample (higher is better); "
              "its module may define PROMPTS, the texts the members continue. Shipped: intlm.objectives:lipogram, "
              "intlm.objectives:lipogram_shakespeare. Resuming: the run's unless given.")
@INIT_OPTION
@click.option("--out", type=click.Path(), required=True, help="Run folder for checkpoints and log.jsonl.")
@click.option("--corpus", help="Corpus whose validation split the run is validated on [the one the --init run "
              "was trained on].")
@click.option("--length", type=int, default=32, show_default=True, help="Bytes each member writes per step.")
@click.option("--temperature", type=float, default=1.0, show_default=True, help="Sampling temperature (0: greedy).")
@click.option("--top-k", type=int, default=0, show_default=True, help="Sample from the K likeliest bytes (0: all).")
@RUN_OPTIONS
@UPDATE_OPTIONS
@click.pass_context
def evolve(ctx, objective, init, out, corpus, length, temperature, top_k, steps, minutes, backend, resume,
           eval_seconds, save_seconds, sample_every, keep_last, alpha, **settings):
    """Train a model on a score of the text it writes: each member samples from its own perturbation,
    the objective scores the samples, and EGGROLL updates on the scores as on log-likelihoods.
    Resuming, the objective and sampling settings left out are the run's."""
    from .evolve import Objective
    from .run import load_run
    from .train import pretrain as run_training

    if init is None and not resume:
        raise IntlmError("intlm evolve starts from a trained model: pass --init CHECKPOINT_OR_RUN_DIR (or --resume)")
    if backend == "cupy":
        raise IntlmError("intlm evolve runs on the numpy and numba backends (its sampling is NumPy)")
    if not 0 <= temperature <= 64:
        raise IntlmError("--temperature must be between 0 and 64")
    out = Path(out)
    sampling = {"length": length, "temperature_q4": round(temperature * 16), "top_k": top_k}
    if resume and init is None:
        recorded = load_run(out, quiet=True)[1].get("objective") or {}  # no checkpoint in out: one error line
        objective = objective or recorded.get("objective")
        for key, option in (("length", "length"), ("temperature_q4", "temperature"), ("top_k", "top_k")):
            if key in recorded and ctx.get_parameter_source(option) == ParameterSource.DEFAULT:
                sampling[key] = recorded[key]
    if objective is None:
        raise IntlmError("pass --objective package.module:function")
    task = Objective(objective, **sampling)
    settings["optimizer"] = "eggroll"  # evolve's update is EGGROLL's, whatever trained the --init checkpoint
    cfg = _run_setup(ctx, out, steps, minutes, resume, False, (eval_seconds, save_seconds, sample_every), alpha,
                     settings, init)
    data = _corpus(corpus) if corpus else _recorded_corpus(load_run(init or out, quiet=True)[1], "pass --corpus")
    if steps is None and minutes is None:
        minutes = 10.0
    run_training(data, cfg, out, steps=steps, minutes=minutes, backend=backend, resume=resume,
                 eval_seconds=eval_seconds, save_seconds=save_seconds, sample_seconds=sample_every, init=init, task=task,
                 keep_last=keep_last)
    click.echo(f"checkpoints in {out}", err=True)


def _recorded_corpus(attrs, hint, stream=False):
    """The corpus a checkpoint's run was trained on (stored as an absolute path; none: the default
    corpus); ``hint`` says how to name another when it is gone."""
    source = attrs.get("corpus", {}).get("source")
    if source is not None and not Path(source).exists():
        raise IntlmError(f"the corpus this run was trained on, {source}, is gone: {hint}")
    return _corpus(source, stream)


@cli.command()
@click.argument("checkpoint_path", metavar="CHECKPOINT_OR_RUN_DIR")
@click.option("--prompt", default="", help="Text to continue.")
@click.option("--length", type=int, default=400, show_default=True, help="Bytes to generate (at most).")
@click.option("--temperature", type=float, default=1.0, show_default=True, help="0 is greedy.")
@click.option("--top-k", type=int, default=0, show_default=True, help="Keep the K likeliest bytes (0: all).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--raw", is_flag=True, help="Write the bytes as generated: 0 bytes (document ends) and control "
              "bytes included, exactly --length of them.")
def sample(checkpoint_path, prompt, length, temperature, top_k, seed, raw):
    """Generate text from a checkpoint with integer arithmetic only, written as it is generated.

    The sample ends at the first 0 byte (the end of a document), and control bytes other than
    newline and tab are shown escaped (\\x1b), unless --raw."""
    from . import memory
    from .run import load_model
    from .sample import TextOut, generate

    if length < 0 or top_k < 0 or not 0 <= temperature <= 64 or not 0 <= seed < 1 << 63:
        raise IntlmError("--length and --top-k must be >= 0, --seed in [0, 2**63), --temperature between 0 and 64")
    if sys.stdout is None:  # closed at launch (intlm sample ... >&-)
        raise IntlmError("standard output is closed: the sample has nowhere to go")
    run, _ = load_model(checkpoint_path)
    memory.refuse("intlm sample", memory.sampling(run.cfg))
    prompt_bytes = os.fsencode(prompt)  # the bytes typed, even when they are not valid UTF-8
    out = TextOut(sys.stdout, raw)
    out.write(prompt_bytes)
    for b in generate(run.params, run.cfg, prompt_bytes, length, round(temperature * 16), top_k, seed):
        if b == 0 and not raw:
            break
        out.write(bytes([b]))
    out.close()


@cli.command()
@click.argument("checkpoint_path", metavar="CHECKPOINT_OR_RUN_DIR")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to write the model file and "
              "the C runtime's source into.")
def export(checkpoint_path, out):
    """Write a checkpoint as one model file for the integer-only C runtime, with its C99 source.

    The compiled runtime needs nothing but the C standard library and writes exactly the bytes
    `intlm sample --raw` writes for the same options."""
    from shlex import quote

    from .export import export as write

    model, source = write(checkpoint_path, out)
    run = quote(str(Path(out) / "intlm-run"))
    click.echo(f"wrote {model} and {source}; compile and run with\n"
               f"  cc -std=c99 -O3 -o {run} {quote(str(source))}\n"
               f"  {run} {quote(str(model))} --prompt \"ROMEO.\" --length 300")


@cli.command(name="eval")
@click.argument("checkpoint_path", metavar="CHECKPOINT_OR_RUN_DIR")
@click.argument("corpora", nargs=-1, metavar="[CORPUS]...")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True)
def eval_cmd(checkpoint_path, corpora, backend):
    """Validation bits/byte of a checkpoint on each CORPUS (default: the one it was trained on), a
    line each, beside the unigram and bigram baselines; under it, the compressors' lines of the same
    bytes: xz -9e, bzip2 -9 (and PPMd order 8 with intlm[ppmd]) on them alone and given the run's
    training split first (its own when the run's corpus is gone), as the model has read it.
    Computed once per corpus (tens of seconds) and kept beside its store."""
    from .backends import get
    from .compressors import cached_lines
    from .data import Corpus, baselines
    from . import memory
    from .run import load_model
    from .train import evaluate

    run, attrs = load_model(checkpoint_path)
    memory.refuse("intlm eval", memory.evaluation(run.cfg, get(backend).name))
    # every corpus checked before any figure, each read a piece at a time (memory bounded on any corpus)
    named = [(source, _corpus(source, stream=True)) for source in corpora]
    if named:
        try:
            trained = _recorded_corpus(attrs, "", stream=True)
        except IntlmError:  # gone: each corpus's compressors are given its own training split
            trained = None
    else:
        trained = _recorded_corpus(attrs, "name one (intlm eval RUN CORPUS)", stream=True)
        named = [(None, trained)]
    be = get(backend)
    for source, data in named:
        bpb = evaluate(run.params, run.cfg, data.val, be)
        base = baselines(data.train, data.val)
        click.echo(f"step {run.step}: validation {bpb:.4f} bits/byte | unigram {base['unigram']:.4f} | "
                   f"bigram {base['bigram']:.4f} | {len(data.val)} validation bytes | "
                   f"{source or data.path or 'the default corpus'}")
        given = trained or data
        lines = cached_lines(Corpus(given.train, data.val, {}, data.path), announce=lambda: click.echo(
            "compressing the splits for the compressors' lines (once for this corpus) ...", err=True))
        whose = "the run's training split" if given is trained else "its own training split"
        click.echo("  compressors, alone / given " + whose + ": "
                   + " | ".join(f"{name} {alone:.4f} / {fair:.4f}" for name, (alone, fair) in lines.items()))


def _reference_lines(run_dir, corpus):
    """(baselines, note) for the plot: unigram, bigram and the compressors given the training split
    (compressors.fair_lines) of a validation split.

    ``corpus`` given: that corpus (a bad one is an error). Otherwise the corpus recorded in the
    run's latest checkpoint, checked against its fingerprint; when it cannot be found, no
    baselines and a one-line note saying why.
    """
    from . import checkpoint
    from .compressors import fair_lines
    from .data import baselines
    from .run import data_fingerprint

    if corpus is not None:
        data = _corpus(corpus)
    else:
        where = "plotting without baselines (--corpus gives them)"
        try:
            latest = checkpoint.latest(run_dir)
            if latest is None:
                return {}, f"note: {run_dir} has no checkpoint to name its corpus; {where}"
            record = checkpoint.load(latest).attrs.get("corpus", {})
            data = _corpus(record.get("source"))
        except (IntlmError, OSError) as err:
            return {}, f"note: cannot find the corpus of {run_dir} ({err}); {where}"
        if record.get("train_sha256_16") not in (None, data_fingerprint(data.train)):
            return {}, f"note: the corpus at {data.path} is no longer the one {run_dir} was trained on; {where}"
    lines = baselines(data.train, data.val)
    lines.update(fair_lines(data, announce=lambda: click.echo(
        "compressing the splits for the compressors' lines (once for this corpus) ...", err=True)))
    return lines, None


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True, metavar="RUN_DIR...")
@click.option("--out", type=click.Path(dir_okay=False), help="PNG to write [curve.png in the first RUN_DIR].")
@click.option("--corpus", help="Corpus whose validation split gives the baselines [the first run's].")
@click.option("--title", default="", help="Title above the two panels.")
def plot(run_dirs, out, corpus, title):
    """Bits/byte of runs against wall time and steps, with the baselines of the validation split.

    Each RUN_DIR is a folder written by `intlm pretrain` (its log.jsonl); the runs are overlaid.
    The unigram and bigram lines, and those of xz -9e, bzip2 -9 (and PPMd with intlm[ppmd]) given
    the training split, are of the corpus the first run was trained on.
    """
    from .checkpoint import refuse_inside
    from .plot import curve_of_run, draw, matplotlib_parts

    matplotlib_parts()  # missing: one line naming the extra, before any work
    out = out or Path(run_dirs[0]) / "curve.png"
    refuse_inside(Path(out).parent, f"--out {out}")
    names = [Path(d).resolve().name for d in run_dirs]
    curves = [curve_of_run(Path(d), label=name if names.count(name) == 1 else str(d))
              for d, name in zip(run_dirs, names)]
    lines, note = _reference_lines(Path(run_dirs[0]), corpus)
    if note:
        click.echo(note, err=True)
    else:
        click.echo("baselines: " + " | ".join(f"{k} {v:.4f}" for k, v in lines.items()), err=True)
    click.echo(str(draw(curves, lines, Path(out), title=title)))


def _int_list(ctx, param, value):
    if value is None:
        return None
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None


@cli.command()
@click.option("--width", callback=_int_list, help="Widths, comma-separated (e.g. 64,128,256).")
@click.option("--layers", callback=_int_list, help="Layer counts, comma-separated.")
@click.option("--population", callback=_int_list, help="Populations, comma-separated.")
@click.option("--rank", callback=_int_list, help="Perturbation ranks, comma-separated.")
@click.option("--context-bits", callback=_int_list, help="Context table bits, comma-separated (0: no tables) [0].")
@click.option("--context-order", callback=_int_list, help="Context orders N, comma-separated [4].")
@click.option("--window", type=int, default=100, show_default=True, help="Bytes per member per step.")
@click.option("--repeats", type=int, default=10, show_default=True, help="Timed steps per process (median).")
@click.option("--processes", type=int, default=3, show_default=True,
              help="Processes per setting, one after another; the table shows the median ratio and the range.")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True)
@click.option("--json", "json_path", type=click.Path(), help="Also write the results as JSON to this file ('-': "
              "standard output, after the table).")
@click.option("--no-limit", is_flag=True, help="Skip the int8 product microbenchmark.")
def bench(width, layers, population, rank, context_bits, context_order, window, repeats, processes, backend,
          json_path, no_limit):
    """Training vs inference tokens/s, multiply-adds/s, phase shares and peak memory.

    With no setting given it runs a default grid (widths 64-256, layers 1-4, populations 256-8192,
    rank 1 and 4, and the default model of `intlm pretrain` with and without its context tables);
    any setting given makes the grid the product of the lists (defaults: width 128, 1 layer,
    population 512, rank 1, no context tables; tables with `intlm pretrain`'s logits and credit: "L" in the ctx
    column marks logits). Phases: data, noise, the tables' rows read, forward,
    fitness shaping, update sums, update; "tables" is the share of a step the context tables add. Each setting runs in its own processes (--processes): on a
    shared machine the training/inference ratio moves more from one process to the next than
    within one, so the table shows the run with the median ratio and the range of all runs.
    """
    import itertools
    import json

    from .bench import DEFAULT_GRID, machine_limit, run_one, table_header, table_row

    if repeats < 1 or processes < 1:
        raise IntlmError("--repeats and --processes must be >= 1")
    if width is layers is population is rank is context_bits is context_order is None:
        grid = [dict(s, window=window) for s in DEFAULT_GRID]
    else:
        # tables as `intlm pretrain` has them (PRETRAIN_CONTEXT's logits, credit, mirrors and decay) at each K and N given
        grid = [dict(width=w, layers=n, population=p, rank=r, window=window, context_bits=k,
                     context_order=o if k else 2, **({f: PRETRAIN_CONTEXT[f] for f in ("context_logits", "context_credit", "context_mirror", "context_decay")}
                                                    if k else {}))
                for w, n, p, r, k, o in itertools.product(width or [128], layers or [1], population or [512],
                                                          rank or [1], context_bits or [0], context_order or [4])]
        grid = [dict(t) for t in dict.fromkeys(tuple(s.items()) for s in grid)]  # orders of no table: one
    for setting in grid:
        Config(**setting).check()
    limit = {} if no_limit else machine_limit()
    for name, gmacs in limit.items():
        click.echo(f"{name}: {gmacs} GMAC/s")
    click.echo(table_header())
    results = []
    for setting in grid:  # a line as each setting finishes
        results.append(run_one(setting, repeats, backend, processes))
        click.echo(table_row(results[-1], limit))
    report = {"machine_limit_gmacs": limit, "results": results}
    if json_path == "-":
        click.echo(json.dumps(report))
    elif json_path:
        Path(json_path).write_text(json.dumps(report, indent=1) + "\n")


def main():
    _reserve_closed_streams()
    warnings.filterwarnings("ignore", module="zarr")  # a damaged store's warnings: the error line says it
    from . import distributed

    world = distributed._WORLD
    if distributed.launched():  # under MPI: one error line for the job, and no process left hanging
        try:
            _main()
        except SystemExit as done:
            world = distributed._WORLD
            code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
            if code and world is not None:
                world.fail(code, getattr(done, "everywhere", False) or _EVERYWHERE[0])
            raise
        except BaseException as err:  # anything unforeseen on one process: its line, then MPI_Abort
            world = distributed._WORLD
            rank = f" (MPI rank {world.rank})" if world is not None else ""
            click.echo(f"error{rank}: {type(err).__name__}: {err}", err=True)
            if world is not None:
                world.fail(1, False)
            sys.exit(1)
        return
    _main()


_EVERYWHERE = [False]  # the error being reported is every MPI process's alike (only rank 0 prints it)


def _quiet(err) -> bool:
    """Under MPI, an error every process has alike is reported by rank 0 alone."""
    from . import distributed

    world = distributed._WORLD
    _EVERYWHERE[0] = bool(getattr(err, "everywhere", False))
    return world is not None and not world.primary and _EVERYWHERE[0] and not getattr(err, "report", False)


def _mpi_rank() -> int:
    """This process's MPI rank from its launcher's environment (0 when not under MPI)."""
    for var in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def _reserve_closed_streams():
    """A standard stream closed at launch (``>&-``) leaves its file number to the next file opened, where
    a stray write would land: /dev/null takes it. Python has set sys.stdout or sys.stderr to None;
    stderr then writes to /dev/null, and a command that needs stdout refuses."""
    for fd in (1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_WRONLY)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")


def _main():
    try:
        try:
            quiet_start_ends()  # a Ctrl-C is a KeyboardInterrupt again, reported below
            cli.main(standalone_mode=False)
        except SystemError as err:  # a signal's exception raised inside a Numba call (signals.interruption)
            raise interruption(err) or err from None
    except click.exceptions.Abort:
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    except Stopped as err:
        err.everywhere = True  # every MPI process stops at the same step
        if not _quiet(err):
            click.echo(("\n" if sys.stderr.isatty() else "") + str(err), err=True)  # below the progress bar
        sys.exit(128 + err.signum)
    except click.ClickException as err:  # usage errors: one line too, the --help hint in it
        if _mpi_rank() > 0:
            sys.exit(2)  # every MPI process has the same usage error: rank 0 reports it
        hint = f" (see {err.ctx.command_path} --help)" if getattr(err, "ctx", None) else ""
        click.echo(f"error: {' '.join(err.format_message().split())}{hint}", err=True)
        sys.exit(2)
    except IntlmError as err:
        if not _quiet(err):
            click.echo(f"error: {err}", err=True)
        sys.exit(2)
    except BrokenPipeError:  # the reader went away (intlm sample ... | head): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
    except OSError as err:
        click.echo(f"error: {err.strerror or err}: {err.filename or ''}".rstrip(": "), err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
