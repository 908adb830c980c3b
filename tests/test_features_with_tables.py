"""Every feature on both models: with context tables (what `intlm pretrain` trains by default) and
without. Each feature that has state writes the same checkpoint bytes on NumPy and Numba and when
split and resumed; each feature that updates the weights moves the tables' rows where the model has
them. A new feature (or a new parameter kind) gets its row in FEATURES and is covered on both."""

import dataclasses

import numpy as np
import pytest

from intlm import context, train
from intlm.evolve import Objective
from intlm.run import load_run

from conftest import same_bytes_three_ways, tiny_config

TABLES = {"context_bits": 8, "context_order": 3}
MODELS = {"tables": TABLES, "tables with logits": dict(TABLES, context_logits=1), "no tables": {},
          "tables with logits, graded credit": dict(TABLES, context_logits=1, context_credit="graded"),
          "tables with logits, graded credit, mirrors, decay": dict(TABLES, context_logits=1, context_credit="graded",
                                                                    context_mirror=1, context_decay=7)}
# feature -> (config changes, task): every optimiser, Anchored Weight Decay, and evolve's objective
FEATURES = {
    "eggroll": ({"momentum_shift": 2, "fitness": "rank", "rank": 2}, None),
    "openes": ({"optimizer": "openes", "momentum_shift": 2}, None),
    "spsa": ({"optimizer": "spsa", "population": 2, "step_shift": 4}, None),
    "sepcma": ({"optimizer": "sepcma", "shared_rows": 2}, None),
    "cem": ({"optimizer": "cem", "shared_rows": 2, "elite_shift": 1}, None),
    "anchor decay": ({"anchor_decay": 2, "momentum_shift": 2}, None),
    "evolve": ({"fitness": "rank"}, "intlm.objectives:lipogram"),
}
STEPS = 3


def train_run(corpus, cfg, out, steps, backend, objective, resume=False):
    task = Objective(objective, length=5) if objective else None
    return train.pretrain(corpus, cfg, out, steps=steps, progress=False, save_seconds=1e9, backend=backend,
                          resume=resume, task=task)


@pytest.mark.parametrize("feature, model", [
    (feature, model) for feature in FEATURES for model in MODELS
    # graded (reads) credit is EGGROLL's sparse sums (the full-rank optimisers refuse it): eggroll, AWD, evolve
    if "credit" not in model or not FEATURES[feature][0].get("optimizer")])
def test_feature_is_bit_exact_across_backends_and_resume(corpus, tmp_path, feature, model):
    changes, objective = FEATURES[feature]
    cfg = tiny_config(**{"population": 8, "alpha_q16": 65536, "mlp_ratio": 2, **changes, **MODELS[model]})
    folder = same_bytes_three_ways(tmp_path, lambda out, steps, backend, resume: train_run(
        corpus, cfg, out, steps, backend, objective, resume), STEPS)
    run, _ = load_run(folder)
    if MODELS[model]:
        assert np.count_nonzero(run.params[context.NAME]) > 0, "the tables did not learn"
    else:
        assert context.NAME not in run.params


def test_anchor_decay_pulls_table_rows_back(corpus):
    """A table row moved away from its anchor is pulled back by Anchored Weight Decay, whether or
    not a window read it: rows far from the anchor come back within a few steps at K = 1."""
    from intlm import anchor
    from intlm.run import Run

    cfg = tiny_config(anchor_decay=1, **TABLES)
    run = Run.fresh(cfg)
    run.params[context.NAME][0, :4] = 100
    for step in range(3):
        anchor.pull(run.params, run.anchor, cfg, step)
    assert np.all(run.params[context.NAME][0, :4] < 100)
    assert np.all(run.params[context.NAME][0, 4:] == 0)


def test_init_adds_tables_to_a_model_without_them(corpus, tmp_path):
    """--init with context bits onto a checkpoint trained without them: zero tables, so the new
    run's first evaluation equals the source's, and then the tables learn."""
    base = tiny_config(population=8, alpha_q16=65536, mlp_ratio=2)
    train.pretrain(corpus, base, tmp_path / "base", steps=2, progress=False, backend="numba")
    grown = dataclasses.replace(base, **TABLES).check()
    source, _ = load_run(tmp_path / "base")
    run = train.pretrain(corpus, grown, tmp_path / "grown", steps=0, progress=False, backend="numba",
                         init=tmp_path / "base")
    be = train.get_backend("numba")
    assert train.evaluate(run.params, grown, corpus.val, be) == train.evaluate(source.params, base, corpus.val, be)
    assert run.records["init"]["step"] == 2 and not run.params[context.NAME].any()
    train.pretrain(corpus, grown, tmp_path / "grown2", steps=2, progress=False, backend="numba", init=tmp_path / "base")
    assert np.count_nonzero(load_run(tmp_path / "grown2")[0].params[context.NAME]) > 0


def test_cli_init_adds_tables_and_refuses_changing_them(monkeypatch, capsys, corpus, tmp_path):
    """`--init RUN --context-bits K` grows a model without tables; a checkpoint with tables keeps
    them (another K or --context-bits 0 is refused in one line)."""
    from conftest import run_main

    tiny = ["--population", "8", "--width", "16", "--window", "4", "--steps", "1", "--backend", "numba"]
    source = str(corpus.path)
    assert run_main(monkeypatch, capsys, "pretrain", source, "--out", tmp_path / "plain", *tiny,
                    "--context-bits", "0")[0] == 0
    assert run_main(monkeypatch, capsys, "pretrain", source, "--out", tmp_path / "grown", *tiny,
                    "--init", tmp_path / "plain", "--context-bits", "8")[0] == 0
    assert load_run(tmp_path / "grown")[0].cfg.context_bits == 8
    code, _, err = run_main(monkeypatch, capsys, "pretrain", source, "--out", tmp_path / "shrunk", *tiny,
                            "--init", tmp_path / "grown", "--context-bits", "0")
    assert code == 2 and err.count("error:") == 1 and "context bits 8" in err
