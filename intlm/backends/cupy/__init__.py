"""The CuPy GPU backend: the reference's operations on CUDA kernels (kernels/*.cu), loaded with
cupy.RawModule (compiled by NVRTC at first use for the device's architecture; CuPy caches the
binaries on disk) and launched with the geometry of geometry.py.

Nothing here imports CuPy at module level: the registry imports this package only when the backend
is chosen, and the constructor raises Unavailable when CuPy or a usable GPU is missing (so ``auto``
passes over it and ``--backend cupy`` is one error line).

Data placement: the noise stays on the device (make_noise returns a DeviceNoise whose items are CuPy
arrays in model.make_noise's layout, computed from the raw stream buffers on demand), and so do the
update sums Z; parameters, the population state and the momentum stay the host arrays the interface
names and are copied each call. Every kernel names the reference it matches; gpu_check.py holds
them to it on a GPU.
"""

from collections.abc import Mapping

import numpy as np

from ... import es
from ...errors import IntlmError
from ...arith import EXP2, EXP2_BITS, LOG2_FRAC, LOG2_MANTISSA_BITS, matmul_shift
from ...model import noise_layout, pair_range, split_streams, tensors
from .. import Backend, Unavailable
from . import geometry, sources


class DeviceNoise(Mapping):
    """The noise of a pair range on the device: ``raw[name]`` is a tensor's stream buffer
    (pairs, blocks, count) int8 as noise.cu writes it; ``noise[name]`` is model.make_noise's view of it
    ((A, B) for a matrix, e for a vector, CuPy arrays), made when first asked for."""

    def __init__(self, cfg, raw):
        self.cfg, self.raw, self._views = cfg, raw, {}
        self._tensors = {t.name: t for t in tensors(cfg)}

    def __getitem__(self, name):
        if name not in self._views:
            self._views[name] = split_streams(self.cfg, self._tensors[name], self.raw[name])
        return self._views[name]

    def __iter__(self):
        return iter(self.raw)

    def __len__(self):
        return len(self.raw)


_MODULES = {}


def _no_context(cfg):
    """The context table (context.py) has no kernels yet: a run with one is refused in one line.
    (make_noise and forward are the first calls of a training step and of an evaluation.)"""
    if cfg.context_bits:
        raise IntlmError("the cupy backend has no context table yet (--context-bits): use --backend numba")


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
        _no_context(cfg)
        p0, p1 = pair_range(cfg, p0, p1)
        cp, raw = self.cp, {}
        for t in tensors(cfg):
            count, mult = noise_layout(cfg, t)
            ids = cp.asarray(np.array([t.tensor_id(b) for b in range(t.blocks)], dtype=np.int64))
            buf = cp.empty((p1 - p0, t.blocks, count), dtype=cp.int8)
            grid, block = geometry.grid_stride(buf.size)
            self.launch("noise_streams", grid, block, buf, np.uint64(cfg.seed), ids, np.uint64(step),
                        np.int64(p0), np.int32(p1 - p0), np.int32(t.blocks), np.int32(count), np.int32(mult))
            raw[t.name] = buf
        return DeviceNoise(cfg, raw)

    def raw_noise(self, cfg, noise) -> dict:
        """Stream buffers (pairs, blocks, count) on the device from a DeviceNoise or from noise in
        model.make_noise's layout (NumPy or CuPy arrays, e.g. another backend's)."""
        if isinstance(noise, DeviceNoise):
            return noise.raw
        cp, raw = self.cp, {}
        for t in tensors(cfg):
            v = noise[t.name]
            if t.kind == "matrix":
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
        given). raw: the stream buffers of the rows' pairs (read only when perturbed)."""
        cp = self.cp
        rows, L, d = state.shape
        h = cfg.hidden
        T1 = tokens.shape[1]
        i32 = np.int32
        sigma, pert, nrows, r = i32(cfg.sigma_shift), i32(int(perturbed)), i32(rows), i32(cfg.rank)
        sd, sh = i32(matmul_shift(d)), i32(matmul_shift(h))
        P = {k: self.device(v, cp.int8) for k, v in params.items()}
        blocks = {t.name: t.blocks for t in tensors(cfg)}
        dummy8, dummy32 = cp.zeros(16, cp.int8), cp.zeros(16, cp.int32)
        N = (lambda name: raw[name]) if perturbed else (lambda name: dummy8)
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
            self.launch("embed_norm", rg, rb, tokens, i32(T1), i32(tshift), i32(t), P["embed"], N("embed"), r,
                        sigma, pert, state, i32(L), i32(d), norm[0, 0], N("norm"), i32(2 * L), i32(0), x, a, nrows)
            for l in range(L):
                linear(a, d, d, gru[l, 0], d, "gru", 4 * l, sd, y1)  # W_f . norm(x)
                linear(state_flat[l * d:], L * d, d, gru[l, 1], d, "gru", 4 * l + 1, sd, y2)  # U_f . h
                self.launch("gru_gate", rg, rb, y1, y2, gru_bias[l, 0], N("gru_bias"), i32(2 * L), i32(2 * l),
                            sigma, pert, state, i32(L), i32(l), i32(d), gate, reset, nrows)
                linear(a, d, d, gru[l, 2], d, "gru", 4 * l + 2, sd, y1)  # W_h . norm(x)
                linear(reset, d, d, gru[l, 3], d, "gru", 4 * l + 3, sd, y2)  # U_h . reset
                self.launch("gru_state_norm", rg, rb, y1, y2, gru_bias[l, 1], N("gru_bias"), i32(2 * L),
                            i32(2 * l + 1), sigma, pert, state, i32(L), i32(l), i32(d), gate, x, norm[l, 1],
                            N("norm"), i32(2 * l + 1), a, nrows)
                linear(a, d, d, P["up"][l], h, "up", l, sd, hid)  # relu(clip8(up . norm(x)))
                linear(hid, h, h, P["down"][l], d, "down", l, sh, y1)
                gain, gnoise, gblocks, gblk = ((P["out_norm"], N("out_norm"), 1, 0) if l == L - 1
                                               else (norm[l + 1, 0], N("norm"), 2 * L, 2 * (l + 1)))
                self.launch("residual_norm", rg, rb, y1, sigma, pert, i32(d), gain, gnoise, i32(gblocks), i32(gblk),
                            x, a, nrows)
            linear(a, d, d, P["head"], 256, "head", 0, sd, yhead)
            self.launch("head_loglik", rg, rb, yhead, P["head_bias"], N("head_bias"), sigma, pert, tokens, i32(T1),
                        i32(tshift), i32(t), exp2, log2_frac, i32(EXP2_BITS), i32(LOG2_MANTISSA_BITS),
                        i32((fitness is not None) + 2 * (ll is not None)), fitness if fitness is not None else dummy32, ll if ll is not None else dummy32,
                        i32(T1 - 1), nrows)

    def population_fitness(self, params, cfg, noise, pair_tokens, state, p0: int = 0, p1: int | None = None):
        p0, p1 = pair_range(cfg, p0, p1, noise)
        cp = self.cp
        tokens = self.device(np.asarray(pair_tokens[p0:p1]), cp.uint8)
        work = self.device(state[2 * p0:2 * p1], cp.int8)
        fitness = cp.zeros(2 * (p1 - p0), cp.int32)
        self._window(params, cfg, self.raw_noise(cfg, noise), tokens, 1, work, True, fitness=fitness)
        state[2 * p0:2 * p1] = work.get()
        return fitness.get()

    def forward(self, params, cfg, tokens, state):
        _no_context(cfg)
        cp = self.cp
        tok = self.device(np.asarray(tokens), cp.uint8)
        work = self.device(state, cp.int8)
        ll = cp.zeros((tok.shape[0], tok.shape[1] - 1), cp.int32)
        self._window(params, cfg, None, tok, 0, work, False, ll=ll)
        state[...] = work.get()
        return ll.get()

    # --- update -------------------------------------------------------------------------------------

    def update_sums(self, cfg, noise, f, reads=None) -> dict:
        """es.update_sums on the device: int64 CuPy arrays of each tensor's shape."""
        cp = self.cp
        raw = self.raw_noise(cfg, noise)
        fd = self.device(np.asarray(f), cp.int32)
        pairs = np.int32(fd.shape[0])
        Z = {}
        for t in tensors(cfg):
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

    def update(self, params, cfg, step: int, f, Z, momentum=None) -> int:
        """es.update: the steps run on the device, the host arrays (params, momentum) are updated in place."""
        cp = self.cp
        f = np.asarray(f)
        moving = bool(np.any(f))
        thr_matrix, thr_vector = es.thresholds(cfg, step, f) if moving else (0, 0)
        k = cfg.momentum_shift
        moved = cp.zeros(1, cp.uint64)
        dummy = cp.zeros(1, cp.int64)
        for t in tensors(cfg):
            p = self.device(params[t.name], cp.int8)
            z = self.device(Z[t.name], cp.int64)
            if k:
                m = self.device(momentum[t.name])
                kernel = {np.dtype(np.int32): "update_step_m32", np.dtype(np.int64): "update_step_m64"}[np.dtype(m.dtype)]
            else:
                m, kernel = dummy, "update_step"
            grid, block = geometry.grid_stride(p.size)
            thr = thr_matrix if t.kind == "matrix" else thr_vector
            self.launch(kernel, grid, block, p, z, m, np.int64(p.size), np.int32(k), np.int64(thr),
                        np.int32(int(moving)), moved)
            params[t.name][...] = p.get()
            if k:
                momentum[t.name][...] = m.get()
        return int(moved.get()[0])
