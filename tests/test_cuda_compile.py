"""Every CUDA kernel file compiles for sm_80 and sm_90, without a GPU: NVRTC from the cuda-bindings
package (cuda.bindings.nvrtc, its library from the nvidia-cuda-nvrtc wheel) builds each file to a
cubin, as the cupy backend's RawModule does at run time. Skipped where cuda-bindings is not installed
(it is in the ``test`` extra)."""

import re

import pytest

from intlm.backends.cupy import sources

nvrtc = pytest.importorskip("cuda.bindings.nvrtc")


def compile_cubin(text: str, name: str, arch: str, extra=()) -> tuple:
    """(ok, log, ptx) of NVRTC compiling ``text`` for ``arch`` with the backend's options."""
    err, prog = nvrtc.nvrtcCreateProgram(text.encode(), name.encode(), 0, [], [])
    assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS
    try:
        opts = [o.encode() for o in sources.options() + tuple(extra)] + [f"--gpu-architecture={arch}".encode()]
        (result,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        _, size = nvrtc.nvrtcGetProgramLogSize(prog)
        log = bytearray(size)  # a buffer NVRTC writes into: never a bytes object (b" " * 1 is the interpreter's cached b" ")
        nvrtc.nvrtcGetProgramLog(prog, log)
        if result != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            return False, log.decode(errors="replace"), ""
        _, cubin_size = nvrtc.nvrtcGetCUBINSize(prog)
        assert cubin_size > 0
        _, ptx_size = nvrtc.nvrtcGetPTXSize(prog)
        ptx = bytearray(ptx_size)
        nvrtc.nvrtcGetPTX(prog, ptx)
        return True, log.decode(errors="replace"), ptx.decode(errors="replace")
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


@pytest.mark.parametrize("arch", sources.ARCHS)
@pytest.mark.parametrize("name", sorted(sources.KERNELS))
def test_kernel_file_compiles(name, arch):
    """The file compiles to a cubin for the architecture, without warnings, defines exactly the kernels
    sources.KERNELS names (the names the backend looks up), and no kernel spills or has a stack frame."""
    ok, log, ptx = compile_cubin(sources.source(name), name, arch, ("--ptxas-options=-v",))
    assert ok, log
    assert "warning" not in log.lower(), log
    entries = set(re.findall(r"\.entry\s+(\w+)", ptx))
    assert entries == set(sources.KERNELS[name]), entries
    # ptxas's report: no kernel keeps anything in local memory (register arrays stay in registers)
    clean = log.count("0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads")
    assert clean == len(sources.KERNELS[name]), log


def test_linear_uses_int8_tensor_cores():
    """linear_mma's product is the int8 mma.sync instruction (s8 x s8 -> s32), not a float path."""
    ok, log, ptx = compile_cubin(sources.source("linear.cu"), "linear.cu", "sm_90")
    assert ok, log
    assert "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32" in ptx
    assert "dp4a.s32.s32" in ptx


def test_every_kernel_file_is_listed():
    """kernels/ holds the listed files and headers and nothing else, so a new kernel cannot escape the test."""
    found = {p.name for p in sources.kernel_dir().iterdir() if p.suffix in (".cu", ".cuh")}
    assert found == set(sources.KERNELS) | set(sources.HEADERS)


@pytest.mark.parametrize("broken", [
    'extern "C" __global__ void k(int* x) { x[0] = undefined_name; }',  # an undeclared name
    'extern "C" __global__ void k(int* x) { int* p = 1.5f; x[0] = *p; }',  # a type error
    'extern "C" __global__ void k(int* x) { x[0] = 1 }',  # a syntax error
])
def test_a_broken_kernel_fails(broken):
    ok, log, _ = compile_cubin(broken, "broken.cu", "sm_80")
    assert not ok and "error" in log


def test_wheel_ships_the_kernels(tmp_path):
    """pyproject maps kernels/ into the package: a wheel built from a copy of the sources holds every
    listed .cu and header as intlm/kernels/*, where sources.kernel_dir looks first. Skipped where no
    wheel can be built (pip fetches setuptools for the isolated build)."""
    import shutil
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    repo, src = Path(__file__).resolve().parents[1], tmp_path / "src"
    src.mkdir()
    for part in ("pyproject.toml", "README.md", "intlm", "kernels"):
        (shutil.copytree if (repo / part).is_dir() else shutil.copy)(
            repo / part, src / part, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                        if (repo / part).is_dir() else {}))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(src)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"could not build a wheel here: {done.stderr.strip()[-200:]}")
    (wheel,) = tmp_path.glob("intlm-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    want = {f"intlm/kernels/{f}" for f in list(sources.KERNELS) + list(sources.HEADERS)}
    assert want <= names
    assert {"intlm/backends/cupy/__init__.py", "intlm/backends/numba/forward.py"} <= names
