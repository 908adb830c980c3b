"""The CuPy GPU backend: the reference's operations on CUDA kernels (kernels/*.cu), loaded with
cupy.RawModule (compiled by NVRTC at first use for the device's architecture; CuPy caches the
binaries on disk) and launched with the geometry of geometry.py.

Nothing here imports CuPy at module level: the registry imports this package only when the backend
is chosen, and the constructor raises Unavailable when CuPy or a usable GPU is missing (so ``auto``
passes over it and ``--backend cupy`` is one error line).

Data placement: the noise stays on the device (make_noise returns a DeviceNoise whose items are CuPy
arrays in model.make_noise's layout, computed from the raw stream buffers on demand), and so do the
update sums Z (a table's (read, Z, S) too); parameters, the population state and the momentum stay
the host arrays the interface names and are copied each call, and so do rows_read's results. Every
kernel names the reference it matches; gpu_check.py holds them to it on a GPU.

Parameter kinds: matrices and vectors have dense noise streams, products and steps (linear.cu,
update.cu); the context table (context.py) has its keys and B from noise.cu, its read in the forward,
its rows read, its sparse sums and its sparse step in context.cu.
"""

from collections.abc import Mapping

import numpy as np

from ... import context, es
from ...arith import EXP2, EXP2_BITS, LOG2_FRAC, LOG2_MANTISSA_BITS, matmul_shift
from ...config import LINEAR_SPAN, RANK_LEVELS
from ...model import noise_layout, pair_range, split_streams, tensors
from ...noise import rank_mult
from .. import Backend, Unavailable
from . import geometry, sources


class DeviceNoise(Mapping):
    """The noise of a pair range on the device: ``raw[name]`` is a dense tensor's stream buffer
    (pairs, blocks, count) int8 as noise.cu writes it, a table's (keys, B) as context.make_noise lays
    them out; ``noise[name]`` is model.make_noise's view of it ((A, B) for a matrix, e for a vector,
    (keys, B) for a table, CuPy arrays), made when first asked for."""

    def __init__(self, cfg, raw):
        self.cfg, self.raw, self._views = cfg, raw, {}
        self._tensors = {t.name: t for t in tensors(cfg)}

    def __getitem__(self, name):
        if name not in self._views:
            t = self._tensors[name]
            self._views[name] = self.raw[name] if t.kind == "table" else split_streams(self.cfg, t, self.raw[name])
        return self._views[name]

    def __iter__(self):
        return iter(self.raw)

    def __len__(self):
        return len(self.raw)


_MODULES = {}


def host(a):
    """A device (or host) array as a NumPy array."""
    return a.get() if hasattr(a, "get") else np.asarray(a)


def table_thresholds(cfg, step: int, S):
    """Each listed row's threshold (context.thresholds, exact Python integers on the host), computed
    once per distinct S: many rows share a sum."""
    values, which = np.unique(S, return_inverse=True)
    return context.thresholds(es.z_threshold_q4(cfg, step), cfg.momentum_shift, values)[which].reshape(np.shape(S))


class CupyBackend(Backend):
    name = "cupy"

    def __init__(self, linear: str = "mma"):
        try:
            import cupy
        except ImportError as err:
            raise Unavailable(f"the cupy backend needs CuPy (pip install 'intlm[gpu]'): {err}") from None
        try:
            if cupy.cuda.runtime.getDeviceCount() < 1:
                raise Unavailable("the cupy backend found no GPU")
            cupy.cuda.Device(0).compute_capability
            cupy.zeros(1, dtype=np.int8).sum()
        except Unavailable:
            raise
        except Exception as err:  # no driver, no device, a broken runtime: all mean "not here"
            raise Unavailable(f"the cupy backend found no usable GPU: {type(err).__name__}: {err}") from None
        self.cp = cupy
        self.linear_kernel = "linear_" + linear  # "mma" (tensor cores) or "dp4a" (for checking)

    # --- kernels ------------------------------------------------------------------------------------

    def kernel(self, name: str):
        """The compiled kernel ``name`` (its file compiled once per process, NVRTC, cached by CuPy)."""
        for file, names in sources.KERNELS.items():
            if name in names:
                if file not in _MODULES:
                    _MODULES[file] = self.cp.RawModule(code=sources.source(file), options=sources.options())
                return _MODULES[file].get_function(name)
        raise KeyError(name)

    def launch(self, name, grid, block, *args):
        self.kernel(name)(tuple(grid), tuple(block), args)

    def _int(self, v):
        return np.int32(v)

    def device(self, a, dtype=None):
        cp = self.cp
        a = cp.asarray(a) if dtype is None else cp.asarray(a, dtype=dtype)
        return cp.ascontiguousarray(a)

    # --- noise --------------------------------------------------------------------------------------

    def make_noise(self, cfg, step: int, p0: int = 0, p1: int | None = None) -> dict:
        p0, p1 = pair_range(cfg, p0, p1)
        cp, raw, pairs = self.cp, {}, p1 - p0
        for t in tensors(cfg):
            ids = cp.asarray(np.array([t.tensor_id(b) for b in range(t.blocks)], dtype=np.int64))
            args = (np.uint64(cfg.seed), ids, np.uint64(step), np.int64(p0), np.int32(pairs), np.int32(t.blocks))
            if t.kind == "table":  # context.make_noise: the keys, and B after A's rows in each stream
                keys = cp.empty((pairs, t.blocks), dtype=cp.uint64)
                self.launch("stream_keys", *geometry.grid_stride(keys.size), keys, *args)
                _, rows, w = t.shape  # w: a row's width
                b = self._streams(args, w * cfg.rank, rank_mult(cfg.rank), rows * cfg.rank)
                raw[t.name] = (keys, b.reshape(pairs, t.blocks, w, cfg.rank))
            else:
                raw[t.name] = self._streams(args, *noise_layout(cfg, t), 0)
        return DeviceNoise(cfg, raw)

    def _streams(self, args, count: int, mult: int, start: int):
        """noise_streams: values start .. start + count - 1 of each (pair, block) stream, (pairs, blocks,
        count) int8; ``args`` noise_streams' (seed, ids, step, p0, pairs, blocks)."""
        buf = self.cp.empty((int(args[4]), int(args[5]), count), dtype=self.cp.int8)
        self.launch("noise_streams", *geometry.grid_stride(buf.size), buf, *args, np.int32(count), np.int32(mult),
                    np.int64(start))
        return buf

    def raw_noise(self, cfg, noise) -> dict:
        """Stream buffers (pairs, blocks, count) on the device (a table's (keys, B)) from a DeviceNoise or
        from noise in model.make_noise's layout (NumPy or CuPy arrays, e.g. another backend's)."""
        if isinstance(noise, DeviceNoise):
            return noise.raw
        cp, raw = self.cp, {}
        for t in tensors(cfg):
            v = noise[t.name]
            if t.kind == "table":
                raw[t.name] = (self.device(v[0], cp.uint64), self.device(v[1], cp.int8))
            elif t.kind == "matrix":
                a, b = (self.device(x, cp.int8) for x in v)
                pairs = a.shape[0]
                raw[t.name] = cp.ascontiguousarray(cp.concatenate(
                    [a.reshape(pairs, t.blocks, -1), b.reshape(pairs, t.blocks, -1)], axis=2))
            else:
                e = self.device(v, cp.int8)
                raw[t.name] = e.reshape(e.shape[0], t.blocks, -1)
        return raw

    # --- forward ------------------------------------------------------------------------------------

    def _window(self, params, cfg, raw, tokens, tshift, state, perturbed, fitness=None, ll=None):
        """The model over a window for every row (model.forward / read_byte): tokens (token rows, T + 1)
        uint8 on the device, row b reading token row b >> tshift; state (rows, layers, d) int8 on the
        device, carried and updated; per byte, fitness[b] += ll (when given) and ll[b, t] = ll (when
        given). With mirrors (perturbed, context.mirrors) each row's mirror is scored too: fitness[b]
        adds both, ll is (rows, 2, T), ll[b, 1, t] the mirror's. raw: the stream buffers of the rows'
        pairs (read only when perturbed). With a context table the state has one more row (the bytes
        before, context.history_slots), so its rows are ``S`` = L + 1 apart."""
        cp = self.cp
        rows, S, d = state.shape
        L, h = cfg.layers, cfg.mlp_width
        T1 = tokens.shape[1]
        i32 = np.int32
        sigma, pert, nrows, r = i32(cfg.sigma_shift), i32(int(perturbed)), i32(rows), i32(cfg.rank)
        sd, sh = i32(matmul_shift(d)), i32(matmul_shift(h))
        P = {k: self.device(v, cp.int8) for k, v in params.items()}
        blocks = {t.name: t.blocks for t in tensors(cfg)}
        table = next((t for t in tensors(cfg) if t.kind == "table"), None)  # the model has at most one
        dummy8, dummy32 = cp.zeros(16, cp.int8), cp.zeros(16, cp.int32)
        N = (lambda name: raw[name]) if perturbed else (lambda name: dummy8)
        # the members' table rows summed per byte (context_read): w entries, the first d for the input,
        # the rest (with context logits, params.tensors) for the logits; with mirrors the mirrors' logit
        # entries after them (a row ld = 2w - d long)
        w = table.shape[2] if table else 0
        mirror = perturbed and context.mirrors(cfg)
        ld = 2 * w - d if mirror else w
        ctx = cp.zeros((rows, max(ld, 1)), cp.int32)
        logits, logits_ld = (ctx.reshape(-1)[d:], ld) if w > d else (dummy32, 0)
        # head_loglik's (added logits, ll out) per scoring of a row: the member's, then its mirror's (the
        # same head, its rows' logit entries; its ll after the member's in each row of ll)
        T = T1 - 1
        heads = [(logits, None if ll is None else ll.reshape(-1))]
        if mirror:
            heads.append((ctx.reshape(-1)[w:], None if ll is None else ll.reshape(-1)[T:]))
        # work buffers; a view (rows, n) of a flat buffer is the layout the kernels index (row * n + j)
        x, a = cp.zeros((rows, d), cp.int8), cp.zeros((rows, d), cp.int8)
        reset, gate, hid = cp.zeros((rows, d), cp.int8), cp.zeros((rows, d), cp.uint8), cp.zeros((rows, h), cp.int8)
        y1flat, y2 = cp.zeros(rows * max(d, 256), cp.int32), cp.zeros((rows, d), cp.int32)
        y1, yhead = y1flat[:rows * d].reshape(rows, d), y1flat[:rows * 256].reshape(rows, 256)
        state_flat = state.reshape(-1)
        exp2, log2_frac = cp.asarray(EXP2), cp.asarray(LOG2_FRAC)
        rg, rb = geometry.row_grid(rows)

        def linear(xin, ldx, n, w, m, tname, blk, shift, out):
            """model.Members.linear into out: int32 (rows, m), or int8 relu(clip8) when out is int8."""
            grid, block = geometry.linear_grid(rows, m)
            mode = 1 if out.dtype == cp.int8 else 0
            self.launch(self.linear_kernel, grid, block, xin, i32(ldx), nrows, i32(n), w, i32(m), N(tname),
                        i32(blocks[tname]), i32(blk), r, sigma, pert, shift, i32(mode),
                        out if mode == 0 else dummy32, out if mode == 1 else dummy8, i32(m))

        norm, gru_bias, gru = P["norm"], P["gru_bias"], P["gru"]
        for t in range(T1 - 1):
            if table:  # before embed_norm, which resets the state (the bytes before too) on a 0 byte
                keys, b = raw[table.name] if perturbed else (cp.zeros(1, cp.uint64), dummy8)
                self.launch("context_read", rg, rb, tokens, i32(T1), i32(tshift), i32(t), P[table.name],
                            i32(table.shape[0]), i32(cfg.context_bits), i32(w), keys, b, r, i32(rank_mult(cfg.rank)),
                            sigma, pert, i32(mirror), state, i32(S), i32(d), ctx, nrows)
            self.launch("embed_norm", rg, rb, tokens, i32(T1), i32(tshift), i32(t), P["embed"], N("embed"), r,
                        sigma, pert, state, i32(S), i32(d), norm[0, 0], N("norm"), i32(2 * L), i32(0), ctx,
                        i32(ld), x, a, nrows)
            for l in range(L):
                linear(a, d, d, gru[l, 0], d, "gru", 4 * l, sd, y1)  # W_f . norm(x)
                linear(state_flat[l * d:], S * d, d, gru[l, 1], d, "gru", 4 * l + 1, sd, y2)  # U_f . h
                self.launch("gru_gate", rg, rb, y1, y2, gru_bias[l, 0], N("gru_bias"), i32(2 * L), i32(2 * l),
                            sigma, pert, state, i32(S), i32(l), i32(d), gate, reset, nrows)
                linear(a, d, d, gru[l, 2], d, "gru", 4 * l + 2, sd, y1)  # W_h . norm(x)
                linear(reset, d, d, gru[l, 3], d, "gru", 4 * l + 3, sd, y2)  # U_h . reset
                self.launch("gru_state_norm", rg, rb, y1, y2, gru_bias[l, 1], N("gru_bias"), i32(2 * L),
                            i32(2 * l + 1), sigma, pert, state, i32(S), i32(l), i32(d), gate, x, norm[l, 1],
                            N("norm"), i32(2 * l + 1), a, nrows)
                linear(a, d, d, P["up"][l], h, "up", l, sd, hid)  # relu(clip8(up . norm(x)))
                linear(hid, h, h, P["down"][l], d, "down", l, sh, y1)
                gain, gnoise, gblocks, gblk = ((P["out_norm"], N("out_norm"), 1, 0) if l == L - 1
                                               else (norm[l + 1, 0], N("norm"), 2 * L, 2 * (l + 1)))
                self.launch("residual_norm", rg, rb, y1, sigma, pert, i32(d), gain, gnoise, i32(gblocks), i32(gblk),
                            x, a, nrows)
            linear(a, d, d, P["head"], 256, "head", 0, sd, yhead)
            for extra, out in heads:
                self.launch("head_loglik", rg, rb, yhead, P["head_bias"], N("head_bias"), sigma, pert, tokens,
                            i32(T1), i32(tshift), i32(t), exp2, log2_frac, i32(EXP2_BITS), i32(LOG2_MANTISSA_BITS),
                            i32((fitness is not None) + 2 * (ll is not None)),
                            fitness if fitness is not None else dummy32, out if out is not None else dummy32,
                            i32(T * len(heads)), extra, i32(logits_ld), nrows)

    def population_fitness(self, params, cfg, noise, pair_tokens, state, p0: int = 0, p1: int | None = None,
                           positions=False):
        p0, p1 = pair_range(cfg, p0, p1, noise)
        cp = self.cp
        tokens = self.device(np.asarray(pair_tokens[p0:p1]), cp.uint8)
        work = self.device(state[2 * p0:2 * p1], cp.int8)
        members, T = 2 * (p1 - p0), tokens.shape[1] - 1
        ll = cp.zeros((members, 2, T) if context.mirrors(cfg) else (members, T), cp.int32) if positions else None
        fitness = None if positions else cp.zeros(members, cp.int32)
        self._window(params, cfg, self.raw_noise(cfg, noise), tokens, 1, work, True, fitness=fitness, ll=ll)
        state[2 * p0:2 * p1] = work.get()
        return (ll if positions else fitness).get()

    def forward(self, params, cfg, tokens, state):
        cp = self.cp
        tok = self.device(np.asarray(tokens), cp.uint8)
        work = self.device(state, cp.int8)
        ll = cp.zeros((tok.shape[0], tok.shape[1] - 1), cp.int32)
        self._window(params, cfg, None, tok, 0, work, False, ll=ll)
        state[...] = work.get()
        return ll.get()

    # --- context tables -----------------------------------------------------------------------------

    def rows_read(self, cfg, tokens, state_row) -> tuple:
        """context.rows_read on the device (context_rows); host arrays in, host arrays out."""
        cp = self.cp
        tables = cfg.context_order - 1
        tok = self.device(np.asarray(tokens), cp.uint8)
        before = self.device(np.asarray(state_row)[:, context.history_slots(cfg)], cp.int8)
        reads = cp.empty((tok.shape[0], tok.shape[1] - 1, tables), cp.int64)
        after = cp.empty((tok.shape[0], tables), cp.int64)
        self.launch("context_rows", *geometry.grid_stride(tok.shape[0]), tok, np.int32(tok.shape[1]), before,
                    np.int32(tok.shape[0]), np.int32(tables), np.int32(cfg.context_bits), reads, after)
        return reads.get(), after.get()

    def _table_sums(self, cfg, t, noise, f, reads, local) -> tuple:
        """context.update_sums on the device: (read (n, 2), Z (n, w), S (n, parts)) int64 CuPy arrays.
        context_credit gives each read its credit; the rows with a nonzero one are marked and listed
        in ascending (table, row) order, each given its place in the list; context_sums then adds each
        credited read's terms at its place."""
        cp = self.cp
        tables, rows, w = t.shape
        keys, b = noise
        reads = self.device(reads, cp.int64)  # host (rows_read) or device arrays
        pairs, window = reads.shape[:2]
        parts = context.parts(cfg)
        by_reads = context.credits_reads(cfg, local)
        credit_mode = 0 if not by_reads else 2 if cfg.context_credit == "graded" else 1  # the kernel's by_reads
        i32 = np.int32
        # (pairs, 1 or 2 with mirrors, window): the differences the input entries, then the logit entries are
        # credited by (context.credit_parts); int32 holds them: a byte's is at most 4 * 256 * 64
        loc = self.device(np.asarray(local).reshape(pairs, -1, window) if by_reads else np.zeros((1, 1, 1)), cp.int32)
        c = cp.empty((pairs, window, tables, parts), cp.int32)
        self.launch("context_credit", *geometry.grid_stride(pairs * tables), reads, i32(pairs), i32(window), i32(tables),
                    f, loc, i32(loc.shape[1]), i32(credit_mode), i32(RANK_LEVELS), i32(LINEAR_SPAN), i32(parts), c)
        marked = cp.zeros(tables * rows, cp.int8)
        marked[(reads + cp.arange(tables, dtype=cp.int64) * rows)[(c != 0).any(axis=3)]] = 1
        places = cp.flatnonzero(marked)
        n = int(places.size)
        slot = cp.full(tables * rows, -1, cp.int32)
        slot[places] = cp.arange(n, dtype=cp.int32)
        read = cp.ascontiguousarray(cp.stack([places // rows, places % rows], axis=1).astype(cp.int64))
        z, S = cp.zeros((n, w), cp.int64), cp.zeros((n, parts), cp.int64)
        if n:
            self.launch("context_sums", *geometry.warp_stride(pairs * window * tables), reads, i32(pairs), i32(window),
                        i32(tables), c, i32(parts), keys, b, i32(w), i32(cfg.width), i32(cfg.rank),
                        i32(rank_mult(cfg.rank)), i32(cfg.context_bits), slot, z, S)
        return read, z, S

    def _table_step(self, params, cfg, step: int, t, sums, momentum, moved):
        """context.update on the device (context_step*): the listed rows of the table in params[t.name]
        (a host array, updated in place) and of its momentum; a part with S = 0 gets threshold -1,
        which the kernel leaves alone."""
        cp = self.cp
        read, z, S = (self.device(a, cp.int64) for a in sums)
        n = read.shape[0]
        if n == 0:
            return
        S_host = host(S)
        thr = self.device(np.where(S_host == 0, -1, table_thresholds(cfg, step, S_host)), cp.int64)
        p = self.device(params[t.name], cp.int8)
        m, kernel = self._momentum(momentum, t.name, "context_step")
        self.launch(kernel, *geometry.grid_stride(n * t.shape[2]), p, m, read, z, thr, np.int32(S_host.shape[1]),
                    np.int64(n), np.int32(t.shape[2]), np.int32(cfg.width), np.int32(cfg.context_bits),
                    np.int32(cfg.momentum_shift), moved)
        params[t.name][...] = p.get()
        if cfg.momentum_shift:
            momentum[t.name][...] = m.get()

    # --- update -------------------------------------------------------------------------------------

    def update_sums(self, cfg, noise, f, reads=None, local=None) -> dict:
        """es.update_sums on the device: int64 CuPy arrays of each dense tensor's shape, a table's
        (read, Z, S)."""
        cp = self.cp
        raw = self.raw_noise(cfg, noise)
        fd = self.device(np.asarray(f), cp.int32)
        pairs = np.int32(fd.shape[0])
        Z = {}
        for t in tensors(cfg):
            if t.kind == "table":
                Z[t.name] = self._table_sums(cfg, t, raw[t.name], fd, reads, local)
                continue
            z = cp.empty(t.shape, cp.int64)
            if t.kind == "matrix":
                m, n = t.shape[-2:]
                grid, block = geometry.update_grid(m, n, t.blocks)
                self.launch("update_sums_matrix", grid, block, raw[t.name], pairs, np.int32(t.blocks), np.int32(m),
                            np.int32(n), np.int32(cfg.rank), fd, z)
            else:
                grid, block = geometry.grid_stride(z.size)
                self.launch("update_sums_vector", grid, block, raw[t.name], pairs, np.int64(z.size), fd, z)
            Z[t.name] = z
        return Z

    def _momentum(self, momentum, name, kernel):
        """(the momentum of ``name`` on the device, the kernel variant for its dtype), or without
        momentum (None) a placeholder and the plain kernel."""
        if momentum is None:
            return self.cp.zeros(1, self.cp.int64), kernel
        m = self.device(momentum[name])
        return m, kernel + {np.dtype(np.int32): "_m32", np.dtype(np.int64): "_m64"}[np.dtype(m.dtype)]

    def update(self, params, cfg, step: int, f, Z, momentum=None) -> int:
        """es.update: the steps run on the device, the host arrays (params, momentum) are updated in place."""
        cp = self.cp
        f = np.asarray(f)
        moving = bool(np.any(f))
        thr_matrix, thr_vector = es.thresholds(cfg, step, f) if moving else (0, 0)
        k = cfg.momentum_shift
        moved = cp.zeros(1, cp.uint64)
        for t in tensors(cfg):
            if t.kind == "table":  # only the rows read (none when no pair has f != 0), each its own threshold
                if moving:
                    self._table_step(params, cfg, step, t, Z[t.name], momentum if k else None, moved)
                continue
            p = self.device(params[t.name], cp.int8)
            z = self.device(Z[t.name], cp.int64)
            m, kernel = self._momentum(momentum if k else None, t.name, "update_step")
            grid, block = geometry.grid_stride(p.size)
            thr = thr_matrix if t.kind == "matrix" else thr_vector
            self.launch(kernel, grid, block, p, z, m, np.int64(p.size), np.int32(k), np.int64(thr),
                        np.int32(int(moving)), moved)
            params[t.name][...] = p.get()
            if k:
                momentum[t.name][...] = m.get()
        return int(moved.get()[0])
