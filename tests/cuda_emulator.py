"""A CPU stand-in for CuPy that runs the real kernels/*.cu, for testing the cupy backend where no GPU
is: the CUDA source is compiled by g++ with a small shim (each CUDA thread a fiber on one OS thread,
blocks one after another, __syncthreads, __syncwarp and warp shuffles as barriers that hand the CPU to
the next fiber, __dp4a and __clz by definition, and the
int8 mma.sync emulated from its PTX fragment layout), and the stand-in module offers the few CuPy
calls the backend makes (arrays are host NumPy arrays with .get()).

What this checks: the kernels' C code (indexing, rounding, strides, reductions, guards) and the
backend's orchestration, bit for bit against the NumPy reference. What it cannot check: the GPU's
own behaviour, including whether the hardware's mma fragment layout is the one emulated here
(intlm_emulate_mma encodes our reading of the PTX ISA): gpu_check.py runs linear_mma against
linear_dp4a and the reference on a GPU for that.
"""

import ctypes
import hashlib
import re
import shutil
import subprocess
import tempfile
import types
from pathlib import Path

import numpy as np

SHIM = r"""
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <vector>
#include <ucontext.h>
using std::max;
using std::min;
// A fiber switch: on x86-64 the callee-saved registers pushed on the fiber's own stack and the stack
// pointers swapped (no system call; glibc's swapcontext also saves the signal mask, a system call per
// switch, which made the emulation several times slower); elsewhere ucontext.
#if defined(__x86_64__)
extern "C" void emu_switch(void** save, void* load);
asm(R"(
    .text
    .hidden emu_switch
    .globl emu_switch
    .type emu_switch, @function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_switch, .-emu_switch
)");
struct emu_context { void* sp; };
static inline void emu_swap(emu_context& from, emu_context& to) { emu_switch(&from.sp, to.sp); }
static inline void emu_make(emu_context& c, char* stack, size_t size, void (*entry)()) {
    // the stack as emu_switch leaves it: six saved registers (zero), then entry as the return address,
    // placed so that entry starts with the stack aligned as after a call
    void** top = (void**)(((unsigned long long)(stack + size)) & ~15ULL);
    top[-1] = nullptr;
    top[-2] = (void*)entry;
    for (int i = 3; i <= 8; ++i) top[-i] = nullptr;
    c.sp = top - 8;
}
#else
struct emu_context { ucontext_t uc; };
static inline void emu_swap(emu_context& from, emu_context& to) { swapcontext(&from.uc, &to.uc); }
static inline void emu_make(emu_context& c, char* stack, size_t size, void (*entry)()) {
    getcontext(&c.uc);
    c.uc.uc_stack.ss_sp = stack;
    c.uc.uc_stack.ss_size = size;
    c.uc.uc_link = nullptr;  // entry never returns: it switches back to the scheduler
    makecontext(&c.uc, entry, 0);
}
#endif
struct emu_dim3 { unsigned x, y, z; };
static emu_dim3 gridDim, blockDim, threadIdx, blockIdx;  // threadIdx: the CUDA thread running now
struct emu_gate { int arrived; unsigned generation; };  // a barrier: arrivals, and how often it opened
struct emu_warp {
    emu_gate gate;
    long long slots[32];
    int frag[32][6];
};
struct emu_fiber { emu_context context; emu_dim3 idx; bool done; };
static emu_context emu_scheduler;
static std::vector<emu_fiber> emu_fibers;  // the CUDA threads of the block running now
static std::vector<emu_warp> emu_warps;
static std::vector<char> emu_stacks;
static emu_gate emu_block_gate;
static unsigned emu_current;  // the running fiber's index: its linear thread index in the block
static unsigned long long emu_progress;  // arrivals and finishes, to tell a deadlock from a wait
static const std::function<void()>* emu_body;
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)
// A barrier of ``count`` CUDA threads: the last to arrive opens it, the others hand the CPU back to
// the scheduler until it has opened.
static inline void emu_wait(emu_gate& gate, int count) {
    const unsigned generation = gate.generation;
    ++emu_progress;
    if (++gate.arrived == count) {
        gate.arrived = 0;
        ++gate.generation;
        return;
    }
    while (gate.generation == generation) emu_swap(emu_fibers[emu_current].context, emu_scheduler);
}
static inline emu_warp* emu_my_warp() { return &emu_warps[emu_current / 32]; }
static inline void __syncthreads() { emu_wait(emu_block_gate, (int)emu_fibers.size()); }
static inline void __syncwarp(unsigned = 0xffffffffu) { emu_wait(emu_my_warp()->gate, 32); }
static inline int emu_lane() { return emu_current & 31; }
static inline int __shfl_xor_sync(unsigned, int v, int o) {
    emu_warp* w = emu_my_warp(); int l = emu_lane();
    w->slots[l] = v; __syncwarp();
    int r = (int)w->slots[l ^ o]; __syncwarp();
    return r;
}
static inline int __shfl_sync(unsigned, int v, int src) {
    emu_warp* w = emu_my_warp(); int l = emu_lane();
    w->slots[l] = v; __syncwarp();
    int r = (int)w->slots[src & 31]; __syncwarp();
    return r;
}
static inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
static inline int emu_byte(int w, int i) { return (int)(signed char)((unsigned)w >> (8 * i)); }
static inline int __dp4a(int a, int b, int c) {
    for (int i = 0; i < 4; ++i) c += emu_byte(a, i) * emu_byte(b, i);
    return c;
}
static inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
    const unsigned long long old = *p;
    *p = old + v;
    return old;
}
// mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32, from the PTX ISA's fragment layouts: lane
// (g = lane / 4, t = lane % 4) holds A rows g (regs 0, 2) and g + 8 (regs 1, 3), columns 4t..4t+3
// (regs 0, 1) and 16+4t.. (regs 2, 3); B column g, rows 4t.. (reg 0) and 16+4t.. (reg 1); D rows
// g (0, 1) and g + 8 (2, 3), columns 2t, 2t + 1.
static inline void intlm_emulate_mma(int (&d)[4], int a0, int a1, int a2, int a3, int b0, int b1) {
    emu_warp* w = emu_my_warp(); int l = emu_lane();
    int* f = w->frag[l];
    f[0] = a0; f[1] = a1; f[2] = a2; f[3] = a3; f[4] = b0; f[5] = b1;
    __syncwarp();
    const int g = l >> 2, t = l & 3;
    for (int c = 0; c < 4; ++c) {
        const int row = g + (c >= 2 ? 8 : 0), col = 2 * t + (c & 1);
        int acc = d[c];
        for (int k = 0; k < 32; ++k) {
            const int la = (row % 8) * 4 + (k % 16) / 4, ra = (row >= 8 ? 1 : 0) + (k >= 16 ? 2 : 0);
            const int lb = col * 4 + (k % 16) / 4, rb = 4 + (k >= 16 ? 1 : 0);
            acc += emu_byte(w->frag[la][ra], k % 4) * emu_byte(w->frag[lb][rb], k % 4);
        }
        d[c] = acc;
    }
    __syncwarp();
}
static void emu_entry() {
    (*emu_body)();
    emu_fibers[emu_current].done = true;
    ++emu_progress;
    emu_swap(emu_fibers[emu_current].context, emu_scheduler);  // never resumed
    std::abort();
}
static void emu_launch(const std::function<void()>& body) {
    // every CUDA thread of a block is a fiber (emu_context) on this one OS thread; the scheduler resumes
    // each in turn until it waits at a barrier or finishes, and the blocks run one after another, so a
    // block's shared memory (static here) is its own while it runs
    const unsigned threads = blockDim.x * blockDim.y * blockDim.z;
    const size_t stack = 1 << 17;
    if (emu_stacks.size() < threads * stack) emu_stacks.resize(threads * stack);
    emu_fibers.assign(threads, emu_fiber{});
    emu_body = &body;
    for (unsigned bz = 0; bz < gridDim.z; ++bz)
        for (unsigned by = 0; by < gridDim.y; ++by)
            for (unsigned bx = 0; bx < gridDim.x; ++bx) {
                blockIdx = {bx, by, bz};
                emu_block_gate = {0, 0};
                emu_warps.assign((threads + 31) / 32, emu_warp{});
                for (unsigned t = 0; t < threads; ++t) {
                    emu_fiber& f = emu_fibers[t];
                    emu_make(f.context, &emu_stacks[t * stack], stack, emu_entry);
                    f.idx = {t % blockDim.x, (t / blockDim.x) % blockDim.y, t / (blockDim.x * blockDim.y)};
                    f.done = false;
                }
                for (unsigned live = threads; live;) {
                    const unsigned long long before = emu_progress;
                    for (unsigned t = 0; t < threads; ++t) {
                        if (emu_fibers[t].done) continue;
                        emu_current = t;
                        threadIdx = emu_fibers[t].idx;
                        emu_swap(emu_scheduler, emu_fibers[t].context);
                        live -= emu_fibers[t].done;
                    }
                    if (live && emu_progress == before) {  // every live thread waits at a barrier no one else reaches
                        std::fprintf(stderr, "emulated CUDA kernel deadlocked at a barrier\n");
                        std::abort();
                    }
                }
            }
}
extern "C" void emu_config(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz) {
    gridDim = {gx, gy, gz};
    blockDim = {bx, by, bz};
}
"""

_KERNEL = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\(([^)]*)\)\s*\{')


def _wrap(code: str) -> str:
    """Preprocessed CUDA source -> C++: each kernel becomes a body function and an extern "C" launcher."""
    launchers = []

    def body(match):
        name, params = match.group(1), match.group(2)
        args = ", ".join(re.findall(r"(\w+)\s*$", p.strip())[0] for p in params.split(","))
        launchers.append(f'extern "C" void {name}({params}) {{ emu_launch([&] {{ {name}__body({args}); }}); }}')
        return f"static void {name}__body({params}) {{"

    return SHIM + _KERNEL.sub(body, code) + "\n" + "\n".join(launchers) + "\n"


_LIBS = {}


def compile_source(code: str, workdir: Path) -> ctypes.CDLL:
    key = hashlib.sha256(code.encode()).hexdigest()[:16]
    if key not in _LIBS:
        src, pre, cpp, so = (workdir / f"{key}{ext}" for ext in (".cu", ".i", ".cpp", ".so"))
        src.write_text(code)
        subprocess.run(["g++", "-E", "-P", "-x", "c++", "-DINTLM_EMULATE_MMA", "-o", str(pre), str(src)],
                       check=True, capture_output=True)
        cpp.write_text(_wrap(pre.read_text()))
        done = subprocess.run(["g++", "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread", "-Wno-unknown-pragmas",
                               "-o", str(so), str(cpp)], capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(done.stderr[-4000:])
        _LIBS[key] = ctypes.CDLL(str(so))
    return _LIBS[key]


class DeviceArray(np.ndarray):
    """A "device" array: a NumPy array with CuPy's .get()."""

    def get(self):
        return np.array(self)


def _dev(a):
    return np.asarray(a).view(DeviceArray)


_SCALARS = {np.dtype(np.int32): ctypes.c_int32, np.dtype(np.int64): ctypes.c_int64,
            np.dtype(np.uint64): ctypes.c_uint64, np.dtype(np.uint32): ctypes.c_uint32}


class _Kernel:
    def __init__(self, lib, name):
        self.lib, self.fn = lib, getattr(lib, name)

    def __call__(self, grid, block, args):
        grid, block = tuple(grid) + (1,) * (3 - len(grid)), tuple(block) + (1,) * (3 - len(block))
        self.lib.emu_config(*(ctypes.c_uint(v) for v in grid + block))
        conv = []
        for a in args:
            if isinstance(a, np.ndarray):
                conv.append(ctypes.c_void_p(a.ctypes.data))
            elif isinstance(a, np.generic):
                conv.append(_SCALARS[a.dtype](a.item()))
            else:
                raise TypeError(f"kernel argument {a!r}: pass arrays or NumPy scalars")
        self.fn(*conv)


def fake_cupy(workdir: Path) -> types.ModuleType:
    """A module named cupy with what intlm.backends.cupy uses, running kernels on the CPU."""
    cp = types.ModuleType("cupy")
    for name in ("int8", "uint8", "int32", "int64", "uint64"):
        setattr(cp, name, getattr(np, name))
    cp.asarray = lambda a, dtype=None: _dev(np.array(a, dtype=dtype, copy=True))
    cp.ascontiguousarray = lambda a: _dev(np.ascontiguousarray(a))
    cp.zeros = lambda shape, dtype=float: _dev(np.zeros(shape, dtype))
    cp.empty = lambda shape, dtype=float: _dev(np.empty(shape, dtype))
    cp.concatenate = lambda arrays, axis=0: _dev(np.concatenate([np.asarray(a) for a in arrays], axis=axis))
    cp.full = lambda shape, value, dtype=None: _dev(np.full(shape, value, dtype))
    cp.arange = lambda *args, dtype=None: _dev(np.arange(*args, dtype=dtype))
    cp.flatnonzero = lambda a: _dev(np.flatnonzero(a))
    cp.stack = lambda arrays, axis=0: _dev(np.stack([np.asarray(a) for a in arrays], axis=axis))
    cp.__version__ = "emulated"
    cp.get_default_memory_pool = lambda: types.SimpleNamespace(free_all_blocks=lambda: None, total_bytes=lambda: 0)

    class RawModule:
        def __init__(self, code, options=()):
            self.lib = compile_source(code, workdir)

        def get_function(self, name):
            return _Kernel(self.lib, name)

    cp.RawModule = RawModule
    cp.cuda = types.SimpleNamespace(
        runtime=types.SimpleNamespace(
            getDeviceCount=lambda: 1,
            getDeviceProperties=lambda i: {"name": b"CPU emulation", "major": 9, "minor": 0}),
        Device=lambda i=0: types.SimpleNamespace(compute_capability="90", synchronize=lambda: None))
    return cp


def available() -> bool:
    return shutil.which("g++") is not None


def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="intlm-cuda-emu-"))
