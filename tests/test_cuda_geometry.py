"""Property tests of the CUDA kernels' launch geometry (intlm/backends/cupy/geometry.py mirrors each
kernel's index arithmetic): every output is written by exactly one thread, every input index a
thread reads is in range, and every grid and C int argument is within CUDA's limits for any shape
Config.check allows. No GPU and no CuPy needed."""

import collections

from hypothesis import given, settings
from hypothesis import strategies as st

from intlm.backends.cupy import geometry as g
from intlm.config import POPULATION_MAX, UPDATE_CHUNK, Config
from intlm.errors import IntlmError

widths = st.integers(1, 64).map(lambda k: 16 * k)  # Config.check: multiples of 16 up to 1024


def coverage(outputs):
    counts = collections.Counter(outputs)
    assert all(c == 1 for c in counts.values()), [k for k, c in counts.items() if c > 1][:5]
    return set(counts)


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 300), m=st.integers(1, 48).map(lambda k: 8 * k))
def test_linear_outputs_covered_once(rows, m):
    """linear_mma and linear_dp4a each store every (row, output) of rows x m exactly once, nothing outside."""
    (gx, gy), (threads,) = g.linear_grid(rows, m)
    want = {(r, c) for r in range(rows) for c in range(m)}
    for outputs in (g.linear_mma_outputs, g.linear_dp4a_outputs):
        got = [o for bx in range(gx) for by in range(gy) for t in range(threads)
               for o in outputs(rows, m, bx, by, t >> 5, t & 31)]
        assert coverage(got) == want


@given(n=widths.map(lambda w: w * 8).filter(lambda n: n <= 8192) | widths)
def test_mma_k_loop_covers_each_column_once(n):
    """The four lane groups of linear_mma load each column 0 .. n-1 exactly once, 4 aligned bytes at a
    time, never past n (the last step is zero-filled when n % 32 == 16)."""
    cols = [c for t in range(4) for c in g.mma_k_columns(n, t)]
    assert coverage(cols) == set(range(n))
    for t in range(4):
        starts = g.mma_k_columns(n, t)[::4]
        assert all(s % 4 == 0 for s in starts)


@given(rows=st.integers(1, 200), rank=st.integers(1, g.LIN_MAX_RANK))
def test_linear_xb_tasks_cover_the_tile_once(rows, rank):
    """tile_xb's warps compute each (tile row, rank component) once, within the shared array."""
    got = [task for w in range(g.LIN_THREADS // 32) for task in g.linear_xb_tasks(rows, rank, 0, w)]
    assert coverage(got) == {(r, k) for r in range(g.LIN_ROWS) for k in range(rank)}


@given(rows=st.integers(1, 1000), d=widths)
def test_row_kernels_cover_rows_and_columns_once(rows, d):
    (grid,), (threads,) = g.row_grid(rows)
    got = [g.row_of(b, w) for b in range(grid) for w in range(threads // 32)]
    assert coverage([r for r in got if r < rows]) == set(range(rows))
    assert max(got) < rows + g.ROWS_PER_BLOCK  # the rest return at once
    assert coverage([c for lane in range(32) for c in g.row_columns(d, lane)]) == set(range(d))


@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 24).map(lambda k: 16 * k), n=st.integers(1, 24).map(lambda k: 16 * k),
       blocks=st.integers(1, 3))
def test_update_outputs_covered_once(m, n, blocks):
    (gx, gy, gz), (threads,) = g.update_grid(m, n, blocks)
    got = [o for bx in range(gx) for by in range(gy) for bz in range(gz) for t in range(threads)
           for o in g.update_outputs(m, n, bx, by, bz, t)]
    assert coverage(got) == {(b, i, j) for b in range(blocks) for i in range(m) for j in range(n)}


@given(terms=st.integers(1, 5 * UPDATE_CHUNK), chunk=st.sampled_from([UPDATE_CHUNK, 64, 32]))
def test_update_partial_sums_hold_at_most_a_chunk(terms, chunk):
    """update_sums_matrix's int32 partial sums each hold at most UPDATE_CHUNK terms (config's "update
    partial sum" bound), and together every term once."""
    runs = g.update_runs(terms, chunk)
    assert sum(runs) == terms and max(runs) <= chunk


@given(total=st.integers(1, 1 << 40))
def test_grid_stride_is_within_limits(total):
    (grid,), (threads,) = g.grid_stride(total)
    assert 1 <= grid <= g.GRID_X_MAX and threads <= 1024


@settings(max_examples=30, deadline=None)
@given(total=st.integers(1, 5000), blocks=st.integers(1, 7), count=st.integers(1, 50))
def test_grid_stride_covers_each_index_once(total, blocks, count):
    """A grid-stride loop visits each index once (small grids: the same arithmetic as large ones), and
    noise_streams' split of an index is the (q, b, i) of the flat (pairs, blocks, count) buffer."""
    for grid in (1, 3, g.grid_stride(total)[0][0]):
        got = [i for b in range(grid) for t in range(g.STRIDE_THREADS)
               for i in g.grid_stride_indices(total, grid, g.STRIDE_THREADS, b, t)]
        assert coverage(got) == set(range(total))
    size = blocks * count * 3
    assert [g.noise_index(i, blocks, count) for i in range(size)] == [
        (q, b, i) for q in range(3) for b in range(blocks) for i in range(count)]


@settings(max_examples=30, deadline=None)
@given(total=st.integers(1, 3000))
def test_warp_stride_covers_each_item_once(total):
    """context_sums' grid-stride loop of warps visits each entry of the reads once, at any grid."""
    (grid,), (threads,) = g.warp_stride(total)
    assert threads == 32 * g.ROWS_PER_BLOCK and 1 <= grid <= g.STRIDE_GRID_MAX
    for grid in (1, 5, grid):
        got = [e for b in range(grid) for w in range(g.ROWS_PER_BLOCK) for e in g.warp_stride_items(total, grid, b, w)]
        assert coverage(got) == set(range(total))


configs = st.builds(
    Config, width=widths, layers=st.integers(1, 64), mlp_ratio=st.integers(1, 8),
    population=st.integers(1, POPULATION_MAX // 2).map(lambda p: 2 * p), rank=st.integers(1, 16),
    window=st.integers(1, 100_000), sigma_shift=st.integers(0, 8), momentum_shift=st.integers(0, 8),
    fitness=st.sampled_from(["sign", "rank"]), context_bits=st.sampled_from([0, 8, 16, 20]),
    context_order=st.integers(2, 8))


@settings(max_examples=300, deadline=None)
@given(cfg=configs)
def test_every_launch_of_an_allowed_config_is_within_limits(cfg):
    """For any config Config.check accepts: every grid is within CUDA's limits, every argument the
    backend passes as a C int fits one, and the largest flat index of each buffer fits the int64 the
    kernels compute it in."""
    try:
        cfg.check()
    except IntlmError:
        return
    for kernel, grid, block, ints in g.launches(cfg, cfg.pairs):
        assert 1 <= grid[0] <= g.GRID_X_MAX, kernel
        assert all(1 <= v <= g.GRID_YZ_MAX for v in grid[1:]), kernel
        assert block[0] <= 1024
        assert all(0 <= v <= g.INT32_MAX for v in ints), (kernel, ints)
    rows, h = cfg.population, cfg.mlp_width
    assert rows * max(h, 256) * 4 < 1 << 63  # the largest work buffer, in bytes
    assert cfg.pairs * cfg.window * (cfg.context_order - 1) < 1 << 63  # the entries of the rows read
    assert cfg.rank <= min(g.LIN_MAX_RANK, g.CTX_MAX_RANK)  # tile_xb's and context.cu's shared arrays


def test_the_constants_are_the_kernels_and_the_references():
    """Each size geometry.py computes launches from is the #define of the .cu file it mirrors, and each
    constant common.cuh copies is the Python it names: a change on one side fails here."""
    import re

    from intlm import model, noise
    from intlm.backends.cupy import sources
    from intlm.config import UPDATE_CHUNK

    def defines(name):
        return {k: int(v, 0) for k, v in re.findall(r"^#define (\w+) (0x[0-9A-Fa-f]+|\d+)", sources.source(name), re.M)}

    want = {
        "linear.cu": {"LIN_ROWS": g.LIN_ROWS, "LIN_COLS": g.LIN_COLS, "LIN_THREADS": g.LIN_THREADS,
                      "LIN_MAX_RANK": g.LIN_MAX_RANK},
        "norm.cu": {"ROWS_PER_BLOCK": g.ROWS_PER_BLOCK}, "gru.cu": {"ROWS_PER_BLOCK": g.ROWS_PER_BLOCK},
        "loglik.cu": {"ROWS_PER_BLOCK": g.ROWS_PER_BLOCK}, "update.cu": {"UPD_TILE": g.UPD_TILE},
        "context.cu": {"ROWS_PER_BLOCK": g.ROWS_PER_BLOCK, "CTX_MAX_RANK": g.CTX_MAX_RANK},
        "noise.cu": {"INTLM_GOLDEN": noise.GOLDEN, "INTLM_SEED_SALT": noise.SEED_SALT,
                     "INTLM_GATE_BIAS": model.GATE_BIAS, "INTLM_UPDATE_CHUNK": UPDATE_CHUNK},
    }
    for name, constants in want.items():
        found = defines(name)
        assert {k: found.get(k) for k in constants} == constants, name
