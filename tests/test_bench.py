"""Tests of the throughput benchmark: its figures are consistent, it reports every phase, the int8
limit microbenchmark checks its own results, and bad settings get one error line."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from intlm import bench
from intlm.cli import cli
from intlm.config import Config

from conftest import run_main
from test_cli import assert_one_error_line

TINY = dict(width=16, layers=1, population=8, window=4)


def test_macs_per_token_counts_every_shared_product():
    """GRU 4 d^2 + MLP 2 d h per layer, plus the head 256 d: width 128, 1 layer, ratio 4 is 229,376."""
    assert bench.macs_per_token(Config(width=128, layers=1, mlp_ratio=4)) == 4 * 128 * 128 + 2 * 128 * 512 + 256 * 128
    assert bench.macs_per_token(Config(width=256, layers=2, mlp_ratio=4)) == 2 * (4 * 256 ** 2 + 2 * 256 * 1024) + 256 * 256


def test_synthetic_bytes_never_reset_the_state():
    data = bench.synthetic_bytes(10_000)
    assert data.dtype == np.uint8 and data.min() >= 1 and len(np.unique(data)) == 255


def test_measure_reports_consistent_figures():
    """Throughputs are tokens over step time, the phase shares cover the step, MAC/s follow from tokens/s."""
    r = bench.measure(Config(**TINY).check(), repeats=2, backend="numba")
    tokens = TINY["population"] * TINY["window"]
    assert r["train_tokens_per_s"] == pytest.approx(tokens / r["step_s"], rel=0.01)
    assert r["ratio"] > 0  # a busy machine's timings: their arithmetic is checked on fixed ones below
    assert set(r["shares"]) == set(bench.PHASES)
    assert all(0 <= s <= 1 for s in r["shares"].values())
    assert 0.5 < sum(r["shares"].values()) <= 1.05
    assert r["train_gmacs"] == pytest.approx(r["train_tokens_per_s"] * bench.macs_per_token(Config(**TINY)) / 1e9, abs=0.06)
    assert r["peak_rss_mb"] > 10


def test_measure_reports_the_tables_phases_and_share():
    """With context tables the step has a reads phase and the tables' share of the step (a step
    without them timed beside it); without, both are zero."""
    r = bench.measure(Config(**TINY, context_bits=8, context_order=3).check(), repeats=2, backend="numba")
    assert (r["context_bits"], r["context_order"]) == (8, 3) and r["shares"]["reads"] > 0
    # 1 - plain / with tables: below 1 whatever the timings; no lower bound, since on a loaded machine a
    # millisecond step without tables can take many times the one beside it (seen: -13)
    assert np.isfinite(r["table_share"]) and r["table_share"] < 1 and r["table_share"] != 0
    plain = bench.measure(Config(**TINY).check(), repeats=1, backend="numba")
    assert plain["table_share"] == 0 and plain["shares"]["reads"] < r["shares"]["reads"]


def test_default_grid_has_the_default_model():
    """The default grid measures what `intlm pretrain` trains, with and without its tables."""
    from intlm.cli import DEFAULTS
    from intlm.config import PRETRAIN_CONTEXT

    default = dict(width=DEFAULTS.width, layers=DEFAULTS.layers, population=DEFAULTS.population)
    assert dict(default, **PRETRAIN_CONTEXT) in bench.DEFAULT_GRID and default in bench.DEFAULT_GRID


def test_measure_arithmetic_on_fixed_timings(monkeypatch):
    """With steps of known seconds (each training step 4 s, 3 of them in the forward; inference 1 s,
    then 3 s, alternately; a step without tables 3 s): tokens/s are tokens over the median seconds,
    the ratio the median of each step's inference / training ratio (0.25, 0.75, 0.25: 0.25, not the
    ratio of the medians), the shares the phases' medians over the step, the tables' share 1 - 3/4."""
    infer_times = iter([1.0, 1.0, 3.0, 1.0])  # the first call compiles

    def fake_timers(cfg, backend, data):
        def step(laps=None):
            if laps is not None:
                laps.update(forward=3.0, update=1.0)
            return 4.0 if cfg.context_bits else 3.0
        return None, step, lambda: (next(infer_times), None)

    monkeypatch.setattr(bench, "timers", fake_timers)
    cfg = Config(**TINY, context_bits=8).check()
    r = bench.measure(cfg, repeats=3, backend="numpy")
    tokens = cfg.population * cfg.window
    assert r["train_tokens_per_s"] == tokens / 4 and r["inference_tokens_per_s"] == tokens / 1
    assert r["ratio"] == 0.25 and r["step_s"] == 4.0 and r["table_share"] == 0.25
    assert r["shares"]["forward"] == 0.75 and r["shares"]["update"] == 0.25 and r["shares"]["noise"] == 0


def test_machine_limit_measures_three_kernels():
    limit = bench.machine_limit(rows=64, inner=64, cols=64, repeats=2)
    assert len(limit) == 3 and all(v > 0 for v in limit.values())
    assert any(name.startswith("int8 tile kernel") for name in limit)


def test_bench_command_prints_table_and_json(tmp_path):
    """`intlm bench` with settings runs their product, each in its own processes, and writes JSON;
    a setting's figures are those of the run with the median ratio, beside every run's ratio."""
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(cli, ["bench", "--width", "16", "--population", "8", "--window", "4",
                                      "--context-bits", "0,8", "--context-order", "2,3",
                                      "--repeats", "1", "--processes", "3", "--no-limit", "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert [(r["width"], r["population"], r["window"], r["context_bits"], r["context_order"])
            for r in report["results"]] == [(16, 8, 4, 0, 0), (16, 8, 4, 8, 2), (16, 8, 4, 8, 3)]  # no table: one row
    for r in report["results"]:
        assert len(r["ratio_runs"]) == 3 and r["ratio_runs"] == sorted(r["ratio_runs"])
        assert r["ratio"] == r["ratio_runs"][1]
        assert f"{r['ratio_runs'][0]:.2f}-{r['ratio_runs'][2]:.2f}" in result.output
    assert "train tok/s" in result.output and "{" not in result.output  # JSON only in the file --json names


def test_bench_table_fits_100_columns():
    """The head and a row at the largest figures a setting can show (a row is two lines: the figures,
    then where a step's time went) fit 100 columns."""
    r = dict(width=1024, layers=64, population=1 << 23, rank=16, window=99_999, context_bits=20, context_order=8,
             train_tokens_per_s=123_456_789_012, inference_tokens_per_s=1_520_000, ratio=0.49,
             ratio_runs=[0.47, 0.49, 0.51], train_gmacs=9999.9, peak_rss_mb=1_234_567,
             shares=dict.fromkeys(bench.PHASES, 0.0) | {"forward": 1.0}, table_share=-0.99)
    lines = (bench.table_header() + "\n" + bench.table_row(r, {"int8": 9999.9})).splitlines()
    assert len(lines) == 4 and max(map(len, lines)) <= 100
    assert all(f"{p} " in lines[3] for p in bench.PHASES) and "tables -99%" in lines[3]


@pytest.mark.parametrize("args, fragment", [
    (["--width", "24"], "width must be a multiple of 16"),
    (["--population", "7"], "population must be an even number"),
    (["--repeats", "0"], "--repeats"),
    (["--processes", "0"], "--processes"),
])
def test_bench_refuses_impossible_settings(monkeypatch, capsys, args, fragment):
    code, _, err = run_main(monkeypatch, capsys, "bench", "--no-limit", *args)
    assert code == 2
    assert_one_error_line(err, fragment)


def test_bench_refuses_a_malformed_list(monkeypatch, capsys):
    code, _, err = run_main(monkeypatch, capsys, "bench", "--width", "64,abc")
    assert code == 2 and "comma-separated integers" in err and "Traceback" not in err
