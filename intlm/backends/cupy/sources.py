"""Where the CUDA sources of the cupy backend are, which kernels each file defines, and how they are
compiled: one place shared by the backend (cupy.RawModule, NVRTC at first use) and the compile test
(NVRTC through cuda.bindings, no GPU needed). Imports neither CuPy nor cuda.bindings."""

import importlib.resources
from pathlib import Path

# file -> the extern "C" kernels it defines (each file's header comment says what each computes and
# which reference it equals)
KERNELS = {
    "noise.cu": ("noise_streams", "stream_keys"),
    "linear.cu": ("linear_mma", "linear_dp4a"),
    "norm.cu": ("embed_norm", "residual_norm"),
    "gru.cu": ("gru_gate", "gru_state_norm"),
    "loglik.cu": ("head_loglik",),
    "update.cu": ("update_sums_matrix", "update_sums_vector", "update_step_m32", "update_step_m64", "update_step"),
    "context.cu": ("context_read", "context_rows", "context_credit", "context_sums", "context_step_m32", "context_step_m64", "context_step"),
}
HEADERS = ("common.cuh",)
ARCHS = ("sm_80", "sm_90")  # what the compile test builds for; at run time NVRTC targets the device
OPTIONS = ("-std=c++17",)


def kernel_dir() -> Path:
    """The folder holding kernels/*.cu: the installed package's copy (package data intlm/kernels), else
    the repository's top-level kernels/ (a source checkout)."""
    try:
        installed = Path(str(importlib.resources.files("intlm") / "kernels"))
        if (installed / "noise.cu").is_file():
            return installed
    except (ModuleNotFoundError, TypeError):
        pass
    repo = Path(__file__).resolve().parents[3] / "kernels"
    if (repo / "noise.cu").is_file():
        return repo
    raise FileNotFoundError("the CUDA kernels (kernels/*.cu) are neither installed with intlm nor in its source tree")


def source(name: str) -> str:
    """The text of kernels/``name`` with each ``#include "common.cuh"`` replaced by that header's text:
    one self-contained translation unit, so NVRTC needs no include path and CuPy's compile cache
    (keyed on the source text) sees a change to the header."""
    text = (kernel_dir() / name).read_text()
    for header in HEADERS:
        text = text.replace(f'#include "{header}"', (kernel_dir() / header).read_text())
    return text


def options() -> tuple:
    return OPTIONS
