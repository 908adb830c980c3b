"""Launch geometry of the CUDA kernels (kernels/*.cu), in plain Python: the grid and block of every
launch the cupy backend makes, and, for the property tests, which outputs each thread writes and
which inputs it reads, by the same index arithmetic as the kernels (each function names the kernel
lines it mirrors). Imports neither CuPy nor NumPy.

CUDA's limits: grid x < 2**31, grid y and z <= 65535, at most 1024 threads a block.
"""

import math

GRID_X_MAX = (1 << 31) - 1
GRID_YZ_MAX = 65535
INT32_MAX = (1 << 31) - 1

STRIDE_THREADS = 256  # noise_streams, stream_keys, update_sums_vector, update_step*, context_rows, context_credit, context_step*
STRIDE_GRID_MAX = 1 << 16  # blocks of a grid-stride launch (enough to fill any GPU many times over)

LIN_ROWS, LIN_COLS, LIN_THREADS, LIN_MAX_RANK = 64, 32, 128, 16  # linear.cu's defines
ROWS_PER_BLOCK = 4  # norm.cu, gru.cu, loglik.cu, context.cu's context_read and context_sums: one warp per row
UPD_TILE, UPD_THREADS = 32, 256  # update.cu
CTX_MAX_RANK = 16  # context.cu's shared array of a row's factor A


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


# --- grid-stride launches -------------------------------------------------------------------------

def grid_stride(total: int) -> tuple:
    """(grid, block) of a 1-D grid-stride launch over ``total`` elements (total >= 1)."""
    return (max(1, min(cdiv(total, STRIDE_THREADS), STRIDE_GRID_MAX)),), (STRIDE_THREADS,)


def grid_stride_indices(total: int, grid: int, block: int, b: int, thread: int) -> list:
    """The indices thread ``thread`` of block ``b`` visits: ``for (idx = b * block + thread; idx < total;
    idx += grid * block)`` (noise_streams, update_sums_vector; update_step's rounds visit the same)."""
    return list(range(b * block + thread, total, grid * block))


def noise_index(idx: int, blocks: int, count: int) -> tuple:
    """noise_streams' split of a flat index into (q, b, i): out[q, b, i] is out[idx]."""
    i, qb = idx % count, idx // count
    return qb // blocks, qb % blocks, i


# --- linear.cu ------------------------------------------------------------------------------------

def linear_grid(rows: int, m: int) -> tuple:
    """(grid, block) of linear_mma and linear_dp4a: tiles of 64 rows x 32 outputs, rows on grid x."""
    return (cdiv(rows, LIN_ROWS), cdiv(m, LIN_COLS)), (LIN_THREADS,)


def mma_k_steps(n: int) -> list:
    """linear_mma's K loop: (k0, second) for k0 = 0, 32, ... < n; second: whether columns k0+16..k0+31 are
    loaded (else zero-filled). Needs n % 16 == 0."""
    return [(k0, k0 + 16 < n) for k0 in range(0, n, 32)]


def mma_k_columns(n: int, t: int) -> list:
    """The x (and W) columns lane group t (lane % 4) loads over the whole K loop: 4 bytes at ka = k0 + 4t,
    and 4 at kb = ka + 16 when the step is full. The four t together cover 0 .. n-1 exactly once."""
    cols = []
    for k0, second in mma_k_steps(n):
        ka = k0 + 4 * t
        cols += range(ka, ka + 4)
        if second:
            cols += range(ka + 16, ka + 20)
    return cols


def linear_mma_outputs(rows: int, m: int, bx: int, by: int, warp: int, lane: int) -> list:
    """(row, output) pairs that thread (warp, lane) of block (bx, by) stores in linear_mma's epilogue:
    rows row0 + 16 warp + g (+ 8), outputs col0 + 8 nt + 2t (+ 1), within rows x m (linear_out's guard)."""
    row0, col0 = bx * LIN_ROWS, by * LIN_COLS
    g, t = lane >> 2, lane & 3
    r_lo = row0 + warp * 16 + g
    out = []
    for nt in range(4):
        if col0 + nt * 8 >= m:
            break
        for c in range(4):
            row = r_lo if c < 2 else r_lo + 8
            col = col0 + nt * 8 + 2 * t + (c & 1)
            if row < rows and col < m:
                out.append((row, col))
    return out


def linear_dp4a_outputs(rows: int, m: int, bx: int, by: int, warp: int, lane: int) -> list:
    """(row, output) pairs that thread (warp, lane) of block (bx, by) stores in linear_dp4a."""
    row0, col = bx * LIN_ROWS, by * LIN_COLS + lane
    if col >= m:
        return []
    return [(row0 + warp + 4 * i, col) for i in range(LIN_ROWS // 4) if row0 + warp + 4 * i < rows]


def linear_xb_tasks(rows: int, rank: int, bx: int, warp: int) -> list:
    """(tile row, rank component) of the x.B terms warp ``warp`` of block bx computes (tile_xb)."""
    return [(task // rank, task % rank) for task in range(warp, LIN_ROWS * rank, LIN_THREADS // 32)]


# --- one warp per row: norm.cu, gru.cu, loglik.cu ------------------------------------------------

def row_grid(rows: int) -> tuple:
    return (cdiv(rows, ROWS_PER_BLOCK),), (32 * ROWS_PER_BLOCK,)


def row_of(b: int, warp: int) -> int:
    """The batch row of warp ``warp`` in block b (rows past the batch return at once)."""
    return b * ROWS_PER_BLOCK + warp


def row_columns(d: int, lane: int) -> list:
    return list(range(lane, d, 32))


def warp_stride(total: int) -> tuple:
    """(grid, block) of context_sums: a warp per item, 4 warps a block, a grid-stride loop over
    ``total`` items (total >= 1) that visits item e in warp (e // 4) % grid's slot e % 4."""
    return (max(1, min(cdiv(total, ROWS_PER_BLOCK), STRIDE_GRID_MAX)),), (32 * ROWS_PER_BLOCK,)


def warp_stride_items(total: int, grid: int, b: int, warp: int) -> list:
    """The items warp ``warp`` of block b visits: ``for (e = b * 4 + warp; e < total; e += grid * 4)``."""
    return list(range(b * ROWS_PER_BLOCK + warp, total, grid * ROWS_PER_BLOCK))


# --- update.cu ------------------------------------------------------------------------------------

def update_grid(m: int, n: int, blocks: int) -> tuple:
    """(grid, block) of update_sums_matrix: 32 x 32 tiles of Z, one grid z per matrix block."""
    return (cdiv(n, UPD_TILE), cdiv(m, UPD_TILE), blocks), (UPD_THREADS,)


def update_outputs(m: int, n: int, bx: int, by: int, bz: int, thread: int) -> list:
    """(block, i, j) entries of Z that thread ``thread`` of block (bx, by, bz) stores."""
    tx, ty = thread & 15, thread >> 4
    i0, j0 = by * UPD_TILE, bx * UPD_TILE
    return [(bz, i0 + 2 * ty + a, j0 + 2 * tx + b) for a in range(2) for b in range(2)
            if i0 + 2 * ty + a < m and j0 + 2 * tx + b < n]


def update_runs(terms: int, chunk: int) -> list:
    """How many terms each int32 partial sum of update_sums_matrix holds: the tile loop flushes after a
    tile ending at a multiple of ``chunk`` (UPDATE_CHUNK), and once at the end."""
    runs, current = [], 0
    for q0 in range(0, terms, UPD_TILE):
        current += min(UPD_TILE, terms - q0)
        if (q0 + UPD_TILE) % chunk == 0:
            runs.append(current)
            current = 0
    if current or not runs:
        runs.append(current)
    return runs


# --- every launch of a configuration ---------------------------------------------------------------

def launches(cfg, pairs: int) -> list:
    """(kernel, grid, block, int arguments) of every launch the backend makes for pairs of ``cfg``
    (a population_fitness over ``pairs`` pairs, its noise and update), for checking that grids are
    within CUDA's limits and that every argument passed as a C int fits one."""
    from ...model import noise_layout, tensors  # noqa: local, keeps this module import-light

    from ...noise import rank_mult  # noqa: local, as above

    rows, d, h = 2 * pairs, cfg.width, cfg.mlp_width
    out = []
    for t in tensors(cfg):
        if t.kind == "table":  # the keys and B, the table read, the rows read, the sums (every entry of
            tables, n = t.shape[0], t.shape[0] * t.shape[1]  # the reads), the step (every row, worst case)
            count, mult, entries = t.shape[2] * cfg.rank, rank_mult(cfg.rank), pairs * cfg.window * tables
            out.append(("stream_keys", grid_stride(pairs * tables)[0], (STRIDE_THREADS,), (pairs, tables)))
            out.append(("noise_streams", grid_stride(pairs * tables * count)[0], (STRIDE_THREADS,),
                        (pairs, tables, count, mult)))
            out.append(("context_read",) + row_grid(rows) + ((rows, cfg.window + 1, tables, cfg.context_bits,
                                                               t.shape[2], cfg.rank, mult, cfg.layers + 1, d),))
            out.append(("context_rows", grid_stride(pairs)[0], (STRIDE_THREADS,), (pairs, cfg.window + 1)))
            out.append(("context_credit", grid_stride(pairs * tables)[0], (STRIDE_THREADS,), (pairs, tables)))
            out.append(("context_sums",) + warp_stride(entries) + ((pairs, cfg.window, tables, n),))
            out.append(("context_step", grid_stride(n * t.shape[2])[0], (STRIDE_THREADS,), (t.shape[2], cfg.context_bits)))
            continue
        count, mult = noise_layout(cfg, t)
        total = pairs * t.blocks * count
        out.append(("noise_streams", grid_stride(total)[0], (STRIDE_THREADS,), (pairs, t.blocks, count, mult)))
        if t.kind == "matrix":
            m, n = t.shape[-2:]
            out.append(("update_sums_matrix",) + update_grid(m, n, t.blocks) + ((pairs, t.blocks, m, n, cfg.rank),))
        else:
            out.append(("update_sums_vector", grid_stride(t.blocks * count)[0], (STRIDE_THREADS,), (pairs,)))
        size = math.prod(t.shape)
        out.append(("update_step", grid_stride(size)[0], (STRIDE_THREADS,), (cfg.momentum_shift,)))
    for m, n in ((d, d), (h, d), (d, h), (256, d)):
        out.append(("linear_mma",) + linear_grid(rows, m) + ((rows, n, m, 2 * cfg.layers * 4, cfg.rank),))
    out.append(("row kernels",) + row_grid(rows) + ((rows, cfg.window + 1, (cfg.layers + 1) * d),))
    return out
