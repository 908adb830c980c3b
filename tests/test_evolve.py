"""``intlm evolve``: members write through their own perturbations, an objective scores them, the
EGGROLL update follows; bad objectives are one error line and leave the last checkpoint intact."""

import json
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intlm import evolve, model, train
from intlm.errors import IntlmError
from intlm.evolve import DEFAULT_PROMPTS, Objective, check_scores, generate_population, load_objective
from intlm.run import Run, load_run
from intlm.step import apply_fitness

from conftest import checkpoint_state, random_params, run_main, tiny_config

OBJECTIVES = textwrap.dedent('''
    import numpy as np

    PROMPTS = [b"the ", "and "]
    calls = 0

    def count_a(samples):
        return [s.count(b"a") for s in samples]

    def ascii_bytes(samples):
        return [sum(b < 128 for b in s) for s in samples]

    def numpy_scores(samples):
        return np.array([len(set(s)) for s in samples], dtype=np.int64)

    def raises(samples):
        raise ValueError("boom\\nsecond line")

    def floats(samples):
        return [0.5] * len(samples)

    def bools(samples):
        return [True] * len(samples)

    def nones(samples):
        return [None] * len(samples)

    def short(samples):
        return [1] * (len(samples) - 1)

    def huge(samples):
        return [2 ** 70] * len(samples)

    def text(samples):
        return "abc"

    def fails_second_call(samples):
        global calls
        calls += 1
        if calls >= 2:
            raise RuntimeError("late")
        return [0] * len(samples)

    NOT_A_FUNCTION = 3
''')


@pytest.fixture
def objective_module(tmp_path, monkeypatch):
    """A fresh module ``evolve_objectives_test`` of objectives, good and bad, on the Python path."""
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "evolve_objectives_test.py").write_text(OBJECTIVES)
    (tmp_path / "mods" / "evolve_broken_test.py").write_text("raise RuntimeError('cannot load')\n")
    (tmp_path / "mods" / "evolve_bad_prompts_test.py").write_text("PROMPTS = [b'a\\0b']\ndef f(s):\n    return []\n")
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    for name in ("evolve_objectives_test", "evolve_broken_test", "evolve_bad_prompts_test"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setenv("INTLM_CACHE", str(tmp_path / "cache"))
    return "evolve_objectives_test"


@pytest.fixture(scope="module")
def base_run(corpus, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("base") / "run"
    cfg = tiny_config(population=8, window=4, mlp_ratio=2, alpha_q16=65536)
    train.pretrain(corpus, cfg, run_dir, steps=2, progress=False, save_seconds=0, backend="numpy")
    return run_dir


# --- generation ---------------------------------------------------------------------------------------

def test_each_pair_continues_its_prompt_whatever_the_others_are():
    """Pair p continues prompts[p % len]: shorter prompts are padded in front with 0 bytes, which
    changes nothing, so each pair writes what it writes when every pair has its prompt; the
    members of a pair differ only by their perturbation (with none, they write alike)."""
    cfg = tiny_config(population=6, mlp_ratio=2)
    params = random_params(cfg, np.random.default_rng(0))
    noise = model.make_noise(cfg, 5)
    prompts = (b"", b"abc", b"a longer prompt")
    mixed = generate_population(params, cfg, noise, prompts, 12, 16, 0, step=5)
    assert len(mixed) == 6 and all(len(s) == 12 for s in mixed)
    for p, prompt in enumerate(prompts):
        alone = generate_population(params, cfg, noise, (prompt,), 12, 16, 0, step=5)
        assert mixed[2 * p:2 * p + 2] == alone[2 * p:2 * p + 2]
    assert any(mixed[2 * p] != mixed[2 * p + 1] for p in range(3))
    zero = {k: tuple(np.zeros_like(a) for a in v) if isinstance(v, tuple) else np.zeros_like(v)
            for k, v in noise.items()}
    flat = generate_population(params, cfg, zero, prompts, 12, 16, 0, step=5)
    assert all(flat[2 * p] == flat[2 * p + 1] for p in range(3))


def test_generation_is_deterministic_and_changes_with_the_step():
    cfg = tiny_config(population=8)
    params = random_params(cfg, np.random.default_rng(1))
    noise = model.make_noise(cfg, 0)
    a = generate_population(params, cfg, noise, DEFAULT_PROMPTS, 10, 16, 0, step=0)
    assert a == generate_population(params, cfg, noise, DEFAULT_PROMPTS, 10, 16, 0, step=0)
    assert a != generate_population(params, cfg, noise, DEFAULT_PROMPTS, 10, 16, 0, step=1)
    greedy = generate_population(params, cfg, noise, DEFAULT_PROMPTS, 10, 0, 0, step=0)
    assert greedy == generate_population(params, cfg, noise, DEFAULT_PROMPTS, 10, 0, 0, step=1)


# --- objectives and their results --------------------------------------------------------------------

@settings(max_examples=100, deadline=None)
@given(scores=st.lists(st.integers(-(1 << 62), 1 << 62), min_size=1, max_size=20))
def test_integer_scores_are_taken_as_they_are(scores):
    got = check_scores(scores, len(scores), "m:f", 0)
    assert got.dtype == np.int64 and got.tolist() == scores
    assert check_scores(np.array(scores, dtype=np.int64), len(scores), "m:f", 0).tolist() == scores


BAD_VALUES = st.one_of(st.floats(allow_nan=True), st.booleans(), st.none(), st.text(max_size=3),
                       st.just(np.float64(1.0)), st.just(np.bool_(True)), st.just([1]),
                       st.integers(1 << 62, 1 << 80).map(lambda v: v + 1), st.integers(-(1 << 80), -(1 << 62) - 1))


@settings(max_examples=100, deadline=None)
@given(good=st.lists(st.integers(-100, 100), min_size=1, max_size=8), bad=BAD_VALUES, at=st.integers(0, 8))
def test_a_non_integer_or_oversized_score_is_one_error(good, bad, at):
    """Floats (even whole ones), bools, None, strings, lists, and integers past 2**62: refused, naming
    the sample."""
    result = good[:at] + [bad] + good[at:]
    with pytest.raises(IntlmError, match=f"for sample {min(at, len(good))}"):
        check_scores(result, len(result), "m:f", 3)


@pytest.mark.parametrize("result,fragment", [([1, 2], "2 scores for 3 samples"), ([], "0 scores for 3"),
                                             ("abc", "returned str"), (None, "returned NoneType"), (7, "returned int"),
                                             ({1: 1, 2: 2, 3: 3}, "returned dict")])
def test_a_result_that_is_not_a_list_of_the_right_length_is_one_error(result, fragment):
    with pytest.raises(IntlmError, match=fragment):
        check_scores(result, 3, "m:f", 0)


def test_load_objective(objective_module):
    """The function and the module's PROMPTS (str encoded), or the defaults; each failure one line."""
    function, prompts = load_objective(f"{objective_module}:count_a")
    assert function([b"aab", b"x"]) == [2, 0] and prompts == (b"the ", b"and ")
    assert load_objective("intlm.objectives:lipogram")[1] == DEFAULT_PROMPTS
    for spec, fragment in (("nosuch_module_xyz:f", "cannot import nosuch_module_xyz: ModuleNotFoundError"),
                           ("evolve_broken_test:f", "cannot import evolve_broken_test: RuntimeError: cannot load"),
                           (f"{objective_module}:missing", "has no function missing"),
                           (f"{objective_module}:NOT_A_FUNCTION", "has no function NOT_A_FUNCTION"),
                           ("evolve_bad_prompts_test:f", "PROMPTS holds"),
                           ("no_colon", "must be package.module:function"), (":f", "must be package.module:function"),
                           ("m:f.g", "must be package.module:function")):
        with pytest.raises(IntlmError, match=fragment):
            load_objective(spec)


def test_an_objective_module_in_the_current_folder_is_found(tmp_path, monkeypatch):
    (tmp_path / "evolve_here_test.py").write_text("def f(samples):\n    return [7] * len(samples)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "evolve_here_test", raising=False)
    assert load_objective("evolve_here_test:f")[0]([b"x"]) == [7]


def test_an_objective_that_raises_is_one_error_with_its_first_line(objective_module):
    task = Objective(f"{objective_module}:raises", length=4)
    run = Run.fresh(tiny_config(population=4))
    with pytest.raises(IntlmError, match="at step 0 raised ValueError: boom$"):
        task.step(run, train.get_backend("numpy"))
    assert run.step == 0


def test_the_update_is_pretrainings_on_the_scores(objective_module):
    """One evolve step equals step.apply_fitness with the objective's scores of the samples as the
    fitness, from the same noise, on the same starting run: the update is the same function."""
    cfg = tiny_config(population=8, mlp_ratio=2, alpha_q16=65536)
    be = train.get_backend("numpy")
    a, b = Run.fresh(cfg), Run.fresh(cfg)
    task = Objective(f"{objective_module}:count_a", length=6)
    stats = task.step(a, be)
    noise = be.make_noise(cfg, 0)
    scores = np.array(task.function(generate_population(b.params, cfg, noise, task.prompts, 6, 16, 0, 0)))
    assert stats["score_sum"] == scores.sum()
    apply_fitness(b, be, noise, scores, lambda phase: None)
    assert a.step == b.step == 1 and all(np.array_equal(a.params[k], b.params[k]) for k in a.params)


def test_the_update_follows_the_objective(objective_module):
    """An objective that rewards bytes below 128: 15 steps from a fresh model raise the output biases
    of those bytes against the others' by several times the spread chance would give (about 0.35
    here); were the scores matched to the wrong members, they would fall."""
    cfg = tiny_config(population=64, mlp_ratio=1, alpha_q16=32768, fitness="rank", sigma_shift=0)
    run = Run.fresh(cfg)
    task = Objective(f"{objective_module}:ascii_bytes", length=32)
    before = run.params["head_bias"].astype(np.int64)
    for _ in range(15):
        task.step(run, train.get_backend("numba"))
    moved = run.params["head_bias"].astype(np.int64) - before
    assert moved[:128].mean() - moved[128:].mean() > 1.0, moved


# --- the command ------------------------------------------------------------------------------------

def evolve_cli(monkeypatch, capsys, *args):
    return run_main(monkeypatch, capsys, "evolve", "--length", "6", "--save-seconds", "0", *args)


def test_evolve_is_the_same_on_both_backends_and_across_resume(monkeypatch, capsys, objective_module, base_run,
                                                                 tmp_path):
    """The shipped lipogram from a checkpoint: NumPy and Numba write identical checkpoints, a run
    resumed (settings left out: the run's) equals an uninterrupted one, the checkpoint records the
    objective and the start, and the log has each step's mean score."""
    spec = "intlm.objectives:lipogram"
    for name in ("numba", "numpy"):
        code, _, err = evolve_cli(monkeypatch, capsys, "--objective", spec, "--init", base_run, "--out", tmp_path / name,
                                  "--steps", "3", "--backend", name, "--population", "8", "--anchor-decay", "2")
        assert code == 0, err
    code, _, err = evolve_cli(monkeypatch, capsys, "--objective", spec, "--init", base_run, "--out", tmp_path / "split",
                              "--steps", "1", "--population", "8", "--anchor-decay", "2")
    assert code == 0, err
    code, _, err = run_main(monkeypatch, capsys, "evolve", "--out", tmp_path / "split", "--steps", "3", "--resume",
                            "--save-seconds", "0")
    assert code == 0, err
    last = checkpoint_state(tmp_path / "numba" / "step-00000003")
    assert checkpoint_state(tmp_path / "numpy" / "step-00000003") == last
    assert checkpoint_state(tmp_path / "split" / "step-00000003") == last
    _, attrs = load_run(tmp_path / "numba")
    assert attrs["objective"]["objective"] == spec and attrs["objective"]["length"] == 6
    assert attrs["init"]["path"] == str((base_run / "step-00000002").resolve())
    records = [json.loads(line) for line in (tmp_path / "numba" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 3] and all("score_mean" in r for r in records[:3])
    assert records[-1]["final"] and records[-1]["val_bpb"] > 0


@pytest.mark.parametrize("function,fragment", [
    ("raises", "raised ValueError: boom"), ("floats", "returned 0.5 (float) for sample 0"),
    ("bools", "returned True (bool)"), ("nones", "returned None (NoneType)"), ("short", "7 scores for 8 samples"),
    ("huge", "within +-2**62"), ("text", "returned str"), ("fails_second_call", "at step 1 raised RuntimeError: late"),
])
def test_a_bad_objective_stops_the_run_in_one_line_and_leaves_the_checkpoint(
        monkeypatch, capsys, objective_module, base_run, tmp_path, function, fragment):
    """Exceptions and results that are not one integer per sample: exit 2, one error line, no
    traceback; a run that had saved a checkpoint keeps it intact, and nothing newer is written."""
    out = tmp_path / "run"
    code, _, err = evolve_cli(monkeypatch, capsys, "--objective", f"{objective_module}:{function}", "--init", base_run,
                              "--out", out, "--steps", "3", "--population", "8", "--backend", "numpy")
    lines = err.strip().splitlines()
    assert code == 2 and lines[-1].startswith("error:") and fragment in lines[-1], err
    assert "Traceback" not in err and sum(line.startswith("error:") for line in lines) == 1
    saved = sorted(p.name for p in out.glob("step-*"))
    if function == "fails_second_call":
        assert saved == ["step-00000001"] and load_run(out)[0].step == 1
    else:
        assert saved == []


@pytest.mark.parametrize("args,fragment", [
    (["--objective", "nosuch_module_xyz:f", "--init", "BASE"], "cannot import nosuch_module_xyz"),
    (["--objective", "intlm.objectives:nope", "--init", "BASE"], "has no function nope"),
    (["--init", "BASE"], "pass --objective"),
    (["--objective", "intlm.objectives:lipogram"], "pass --init"),
    (["--objective", "intlm.objectives:lipogram", "--init", "BASE", "--length", "0"], "--length"),
    (["--objective", "intlm.objectives:lipogram", "--init", "BASE", "--temperature", "nan"], "--temperature"),
    (["--objective", "intlm.objectives:lipogram", "--init", "BASE", "--width", "32"], "No such option"),
    (["--objective", "intlm.objectives:lipogram", "--init", "BASE", "--backend", "cupy"], "numpy and numba"),
    (["--objective", "intlm.objectives:lipogram", "--resume"], "does not exist"),
])
def test_evolve_refusals_are_one_line(monkeypatch, capsys, objective_module, base_run, tmp_path, args, fragment):
    args = [str(base_run) if a == "BASE" else a for a in args]
    code, _, err = evolve_cli(monkeypatch, capsys, *args, "--out", tmp_path / "run", "--steps", "1")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], err
    assert not (tmp_path / "run").exists()


def test_resuming_with_another_objective_or_command_is_refused(monkeypatch, capsys, objective_module, base_run,
                                                               corpus, tmp_path):
    out = tmp_path / "run"
    code, _, err = evolve_cli(monkeypatch, capsys, "--objective", f"{objective_module}:count_a", "--init", base_run,
                              "--out", out, "--steps", "1", "--population", "8")
    assert code == 0, err
    for args, fragment in ((["evolve", "--objective", "intlm.objectives:lipogram"], "settings differ from the run's (objective"),
                           (["evolve", "--length", "7"], "(length)"),
                           (["pretrain", corpus.path], "was trained by intlm evolve")):
        code, _, err = run_main(monkeypatch, capsys, *args, "--out", out, "--steps", "2", "--resume")
        assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1, err


def test_evolve_module_names_are_its_own():
    """The tensor ids of the draws of sampling, evolving and the anchor's pull are distinct."""
    from intlm import anchor, sample

    assert len({evolve.EVOLVE_TENSOR, sample.SAMPLE_TENSOR, anchor.ANCHOR_TENSOR}) == 3
