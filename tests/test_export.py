"""`intlm export` and the C runtime: compiled integer-only (no float or SIMD register, no soft-float
helper), it writes exactly the bytes `intlm sample --raw` writes, and refuses a damaged model file in
one line. Skipped only where no C compiler exists."""

import hashlib
import os
import platform
import shutil
import struct
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings, strategies as st

from intlm import export
from intlm.cli import cli
from intlm.errors import IntlmError
from intlm.run import Run

from conftest import random_params, run_main, text_bytes, tiny_config

CC = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler")
# the flags; -mgeneral-regs-only (GCC and Clang on x86-64 and AArch64) refuses any float or SIMD register
FLAGS = ["-std=c99", "-O2", "-Wall", "-Werror"]
if platform.machine().lower() in ("x86_64", "amd64", "aarch64", "arm64"):
    FLAGS.append("-mgeneral-regs-only")
TINY = ["--population", "8", "--width", "16", "--window", "4", "--backend", "numpy"]


def compile_c(source, out, flags=FLAGS):
    done = subprocess.run([CC, *flags, "-o", str(out), str(source)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    """The runtime compiled with the issue's flags, checked to link no soft-float helper."""
    binary = compile_c(export.runtime_source(), tmp_path_factory.mktemp("runtime") / "intlm-run")
    nm = shutil.which("nm")
    if nm:
        symbols = subprocess.run([nm, str(binary)], capture_output=True, text=True, check=True).stdout.split()
        soft_float = [s for s in symbols if s.startswith("__") and ("sf" in s or "df" in s)]
        assert soft_float == [], soft_float
    return binary


@pytest.fixture(scope="module")
def vectorised(tmp_path_factory):
    """The build `intlm export` prints (-O3: the compiler vectorises the integer loops)."""
    return compile_c(export.runtime_source(), tmp_path_factory.mktemp("runtime") / "intlm-run-O3",
                     ["-std=c99", "-O3", "-Wall", "-Werror"])


def test_library_build_needs_no_stdio(tmp_path):
    """-DINTLM_NO_MAIN (a microcontroller's build, the model linked in as bytes) leaves the runtime
    needing nothing from the C library but memory and string comparisons and copies."""
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("no nm")
    obj = tmp_path / "runtime.o"
    done = subprocess.run([CC, *FLAGS, "-pedantic", "-DINTLM_NO_MAIN", "-c", "-o", str(obj), str(export.runtime_source())],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    undefined = subprocess.run([nm, "-u", str(obj)], capture_output=True, text=True, check=True).stdout.split()
    hardening = {"__stack_chk_fail", "__stack_chk_guard"}  # where the compiler adds stack protection by default
    assert {s for s in undefined if s != "U"} <= {"memcmp", "memcpy", "memmove", "memset", "strncmp"} | hardening


def trained_run(root: Path, *settings) -> Path:
    """A run folder trained 3 steps through the CLI with these settings."""
    text = root / "corpus.txt"
    text.write_bytes(text_bytes(400, seed=6))
    out = root / "run"
    env = {"INTLM_CACHE": str(root / "cache")}
    result = CliRunner(env=env).invoke(cli, ["pretrain", str(text), "--steps", "3", *TINY, *settings, "--out", str(out),
                                             "--save-seconds", "0", "--sample-every", "0"])
    assert result.exit_code == 0, result.output
    return out


def random_run(root: Path, **shape) -> Path:
    """A checkpoint of random weights with many saturated ones (every path of the forward exercised)."""
    cfg = tiny_config(**shape)
    run = Run.fresh(cfg, random_params(cfg, np.random.default_rng(sum(shape.values()))))
    run.save(root / "run", {"train_sha256_16": "0" * 16, "train_bytes": 0, "val_bytes": 0, "source": None})
    return root / "run"


MODELS = {
    "trained, no tables": lambda root: trained_run(root, "--context-bits", "0"),
    "trained, tables": lambda root: trained_run(root, "--context-bits", "10", "--context-order", "3"),
    "random 48x2, tables of order 8 with logits": lambda root: random_run(root, width=48, layers=2, mlp_ratio=3,
                                                                          context_bits=8, context_order=8,
                                                                          context_logits=1),
    "random 32x3, no tables": lambda root: random_run(root, width=32, layers=3, mlp_ratio=8),
}


@pytest.fixture(scope="module", params=list(MODELS))
def exported(request, tmp_path_factory):
    """(checkpoint folder, model file) of each model, exported through the CLI."""
    root = tmp_path_factory.mktemp("export")
    run = MODELS[request.param](root)
    result = CliRunner().invoke(cli, ["export", str(run), "--out", str(root / "out")])
    assert result.exit_code == 0, result.output
    assert "cc -std=c99 -O3" in result.output
    assert (root / "out" / export.SOURCE_FILE).read_bytes() == export.runtime_source().read_bytes()
    return run, root / "out" / export.MODEL_FILE


def python_sample(run, prompt: bytes, options) -> bytes:
    result = CliRunner().invoke(cli, ["sample", str(run), "--raw", "--prompt", os.fsdecode(prompt), *options])
    assert result.exit_code == 0, result.output
    return result.stdout_bytes


def c_sample(runtime, model, prompt: bytes, options) -> bytes:
    done = subprocess.run([runtime, model, "--prompt", prompt, *options], capture_output=True)
    assert done.returncode == 0 and done.stderr == b"", done.stderr
    return done.stdout


CASES = [  # prompt, then the options both programs get
    (b"", []),  # the defaults: 400 bytes, temperature 1, all bytes, seed 0
    (b"the ", ["--length", "60", "--temperature", "0"]),  # greedy
    (b"ROMEO.", ["--length", "60", "--temperature", "0", "--top-k", "3", "--seed", "5"]),
    (b"he was", ["--length", "80", "--seed", "1"]),
    (b"a", ["--length", "80", "--seed", str(2 ** 63 - 1), "--temperature", "0.5"]),
    (b"\xff\x01z", ["--length", "50", "--temperature", "2.5", "--top-k", "1"]),  # top-1 at any temperature: greedy
    (b"of", ["--length", "60", "--temperature", "0.7", "--top-k", "5", "--seed", "3"]),
    (b"of", ["--length", "60", "--temperature", "1.03125", "--top-k", "40", "--seed", "3"]),  # 16.5: a tie, to 16
    (b"and\nthe", ["--length", "60", "--temperature", "64", "--top-k", "300", "--seed", "4"]),
    (b"", ["--length=40", "--temperature=0.09375", "--seed=8"]),  # 1.5 sixteenths: to 2
    (b"in", ["--length", "0"]),
]


@pytest.mark.parametrize("prompt, options", CASES)
def test_runtime_writes_the_bytes_intlm_sample_writes(runtime, vectorised, exported, prompt, options):
    run, model = exported
    want = python_sample(run, prompt, options)
    assert c_sample(runtime, model, prompt, options) == want
    assert c_sample(vectorised, model, prompt, options) == want
    assert options or len(want) == 400


def test_runtime_check_reproduces_the_export_sample(runtime, exported):
    """--check: the 32 bytes the Python sampler wrote at export, recomputed by the C program."""
    run, model = exported
    done = subprocess.run([runtime, model, "--check"], capture_output=True, text=True)
    assert done.returncode == 0 and "reproduces the 32 bytes" in done.stdout, done.stderr
    assert c_sample(runtime, model, b"", ["--length", "32"]) == python_sample(run, b"", ["--length", "32"])


# --- bad model files: one line on stderr, a non-zero exit ----------------------------------------

def c_error(runtime, *args) -> str:
    done = subprocess.run([runtime, *map(str, args)], capture_output=True, text=True)
    assert done.returncode != 0 and done.stdout == "", (done.returncode, done.stdout)
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def with_hash(data: bytearray) -> bytes:
    """A model file whose hash is made to match its (changed) bytes."""
    data[16:48] = hashlib.sha256(bytes(data[:16] + data[48:])).digest()
    return bytes(data)


@pytest.fixture(scope="module")
def good_model():
    """A model file with context tables, random weights."""
    cfg = tiny_config(context_bits=8, context_order=3)
    run = Run.fresh(cfg, random_params(cfg, np.random.default_rng(1)))
    return export.model_bytes(run, "ab" * 32)


@pytest.mark.parametrize("damage, fragment", [
    (lambda d: d[:-100], "damaged or truncated"),
    (lambda d: d[:40], "truncated"),
    (lambda d: d[:0], "not an intlm model file"),
    (lambda d: d[:1000] + bytes([d[1000] ^ 1]) + d[1001:], "damaged or truncated"),  # a weight changed
    (lambda d: d[:60] + bytes([d[60] ^ 2]) + d[61:], "damaged or truncated"),  # the header changed
    (lambda d: b"#include <stdio.h>\n" * 20, "not an intlm model file"),
    (lambda d: with_hash(bytearray(d[:8] + struct.pack("<I", 2) + d[12:])), "format version"),
    (lambda d: with_hash(bytearray(d[:48] + struct.pack("<I", 32) + d[52:])), "does not match its config"),
    (lambda d: with_hash(bytearray(d[:48] + struct.pack("<I", 24) + d[52:])), "model shape"),
    (lambda d: with_hash(bytearray(d[:64] + struct.pack("<I", 0) + d[68:])), "model shape"),  # tables, no order
    (lambda d: with_hash(bytearray(d[:68] + struct.pack("<I", 1) + d[72:])), "does not match its config"),  # logits
    (lambda d: with_hash(bytearray(d[:68] + struct.pack("<I", 2) + d[72:])), "model shape"),
])
def test_runtime_refuses_a_damaged_model_file(runtime, good_model, tmp_path, damage, fragment):
    path = tmp_path / "model.intlm"
    path.write_bytes(damage(good_model))
    assert fragment in c_error(runtime, path, "--length", "5")


def test_check_fails_on_bytes_the_runtime_does_not_reproduce(runtime, good_model, tmp_path):
    """--check compares: the same file with other check bytes (and a hash made to match) is refused."""
    path = tmp_path / "model.intlm"
    data = bytearray(good_model)
    data[148:180] = bytes(b ^ 1 for b in data[148:180])
    path.write_bytes(with_hash(data))
    assert "does not reproduce" in c_error(runtime, path, "--check")
    path.write_bytes(good_model)
    assert subprocess.run([runtime, path, "--check"], capture_output=True).returncode == 0


def test_runtime_refuses_bad_options_and_a_missing_file(runtime, good_model, tmp_path):
    path = tmp_path / "model.intlm"
    path.write_bytes(good_model)
    assert "cannot read model file" in c_error(runtime, tmp_path / "missing.intlm")
    for args, fragment in [(["--temperature", "64.01"], "--temperature"), (["--temperature", "-1"], "--temperature"),
                           (["--temperature", "nan"], "--temperature"), (["--length", "-1"], "--length"),
                           (["--top-k", "1.5"], "--top-k"), (["--seed", str(2 ** 63)], "--seed"),
                           (["--sed", "1"], "no such option"), (["--length"], "needs a value"), ([path], "second")]:
        assert fragment in c_error(runtime, path, *args)


# --- intlm export -------------------------------------------------------------------------------

def test_export_refuses_a_damaged_checkpoint(monkeypatch, capsys, tmp_path):
    run = random_run(tmp_path, width=16)
    chunk = [p for p in (run / "step-00000000" / "embed").rglob("*") if p.is_file() and p.name != "zarr.json"][0]
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    code, out, err = run_main(monkeypatch, capsys, "export", run / "step-00000000", "--out", tmp_path / "out")
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "corrupt" in lines[0], err
    assert not (tmp_path / "out" / export.MODEL_FILE).exists()


def test_export_refuses_a_parameter_the_runtime_does_not_know():
    cfg = tiny_config()
    run = Run.fresh(cfg)
    run.params["logit_table"] = np.zeros((4, 16), np.int8)
    with pytest.raises(IntlmError, match="logit_table"):
        export.model_bytes(run, "0" * 64)


def test_export_refuses_a_setting_the_runtime_does_not_know(monkeypatch):
    """A config field outside RUNTIME_FIELDS and TRAINING_FIELDS may change what the model computes:
    refused unless it has its default value (here context logits, as if the runtime did not know it)."""
    monkeypatch.setattr(export, "RUNTIME_FIELDS", tuple(f for f in export.RUNTIME_FIELDS if f != "context_logits"))
    cfg = tiny_config(context_bits=8, context_logits=1)
    with pytest.raises(IntlmError, match="context_logits"):
        export.model_bytes(Run.fresh(cfg), "0" * 64)
    assert export.model_bytes(Run.fresh(tiny_config(context_bits=8)), "0" * 64).startswith(export.MAGIC)


def test_model_file_header(good_model):
    """The header says what the docstring of export.py says it does."""
    magic, version, header, digest = export.PREFIX.unpack_from(good_model)
    assert (magic, version) == (export.MAGIC, export.VERSION) and header % export.ALIGN == 0
    assert digest == hashlib.sha256(good_model[:16] + good_model[48:]).digest()
    width, layers, ratio, bits, order, logits, count, step, source, check = export.FIXED.unpack_from(good_model, 48)
    assert (width, layers, ratio, bits, order, logits, count, step, source) == (16, 1, 1, 8, 3, 0, 11, 0, b"ab" * 32)
    assert export.PREFIX.size + export.FIXED.size == 180  # runtime.c's INTLM_FIXED


# --- the temperature, read as Python's float() reads it, without floating point -----------------

DRIVER = """#define main runtime_main
#include "{source}"
#undef main
int main(void)
{{
    static char line[20000];
    while (fgets(line, sizeof line, stdin)) {{
        line[strcspn(line, "\\n")] = 0;
        printf("%d\\n", (int)parse_temperature(line));
    }}
    return 0;
}}
"""


@pytest.fixture(scope="module")
def temperature_reader(tmp_path_factory):
    """The runtime's parse_temperature on each line of its input."""
    root = tmp_path_factory.mktemp("driver")
    (root / "driver.c").write_text(DRIVER.format(source=export.runtime_source()))
    binary = compile_c(root / "driver.c", root / "driver")

    def read(texts):
        done = subprocess.run([binary], input="\n".join(texts) + "\n", capture_output=True, text=True, check=True)
        return [int(v) for v in done.stdout.split()]
    return read


def python_temperature(text: str) -> int:
    """What `intlm sample` makes of --temperature TEXT: round(t * 16), or -1 where it refuses it."""
    try:
        t = float(text)
    except ValueError:
        return -1
    return round(t * 16) if 0 <= t <= 64 else -1


def decimal(x: Fraction) -> str:
    """The exact decimal expansion of a dyadic fraction >= 0."""
    twos = (x.denominator & -x.denominator).bit_length() - 1  # the denominator is 2**twos * 5**fives
    fives, rest = 0, x.denominator >> twos
    while rest % 5 == 0:
        fives, rest = fives + 1, rest // 5
    digits = max(twos, fives)
    whole = str(int(x * 10 ** digits)).rjust(digits + 1, "0")
    return whole[:len(whole) - digits] + ("." + whole[len(whole) - digits:] if digits else "")


def edges(k: int) -> list:
    """The midpoint (2k + 1) / 32 between two temperatures, the edges of the doubles that round to it
    (half an ulp each side: a tie rounds to it, its mantissa being even) and numbers just inside and
    outside them."""
    c = Fraction(2 * k + 1, 32)
    half = Fraction(1, 2 ** (53 - (c.numerator.bit_length() - 6)))  # c in [2**e, 2**(e+1)): ulp 2**(e-52)
    below = half / 2 if k == 0 else half
    tiny = Fraction(1, 10 ** 60)
    return [c, c + half, c - below, c + half + tiny, c + half - tiny, c - below - tiny, c - below + tiny]


def test_temperature_is_read_exactly_as_python_reads_it(temperature_reader):
    texts = [decimal(x) for k in range(1024) for x in edges(k)]
    top = Fraction(64) + Fraction(1, 2 ** 47)  # the largest number whose double is 64
    tiny = Fraction(1, 2 ** 1075)  # the largest number whose double is 0
    for x in (top, tiny):
        texts += [decimal(x), "-" + decimal(x), decimal(x) + "0" * 900 + "1", "-" + decimal(x) + "0" * 900 + "1"]
    texts += ["1", "1.0", "0", "-0", "-0.0", "+0", ".5", "5.", ".", "e5", "1e1", "1E+1", "6.4e1", "640e-1", "1_0.5",
              "1e1_0", "1__0", "_1", "1_", "1_.5", "1._5", "1.5_", " 1.5\t", "+.5e-1", "nan", "inf", "-inf", "0x1",
              "1e-400", "-1e-400", "-2.4703282292062327e-324", "-2.4703282292062328e-324", "1e999999999999",
              "1e-999999999999", "0e999999", "00001.5000", "1.5e", "--1", "", "1 2", "64.00000000000001", "0.1"]
    assert temperature_reader(texts) == [python_temperature(t) for t in texts]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1023), st.integers(-10 ** 9, 10 ** 9), st.integers(0, 40),
                          st.sampled_from(["", "e0", "e-2", "e1"]), st.booleans()), min_size=50, max_size=50))
def test_temperature_near_midpoints(temperature_reader, picks):
    texts = []
    for k, offset, scale, exponent, underscore in picks:
        x = Fraction(2 * k + 1, 32) + Fraction(offset, 10 ** scale)
        x = x * (100 if exponent == "e-2" else 1) / (10 if exponent == "e1" else 1)
        text = decimal(abs(x)) + exponent
        pair = next((i for i in range(len(text) - 1) if (text[i] + text[i + 1]).isdigit()), None)
        texts.append(text[:pair + 1] + "_" + text[pair + 1:] if underscore and pair is not None else text)
    assert temperature_reader(texts) == [python_temperature(t) for t in texts]


def test_uniform_model_draws_every_byte_from_the_top_of_its_draw(runtime, tmp_path):
    """A model whose logits are all equal (zero weights) weighs every byte 2**16 at temperature 1,
    so the byte drawn at position i is the top byte of the 32-bit draw: sample.choose says so, and
    the C program agrees over 300,000 draws, among them draws that land exactly on a boundary of the
    cumulative weights (where cumulative <= r, not <, decides)."""
    from intlm.noise import GOLDEN, mix_array, stream_key
    from intlm.sample import SAMPLE_TENSOR, choose

    cfg = tiny_config()
    run = Run.fresh(cfg, {name: np.zeros_like(p) for name, p in Run.fresh(cfg).params.items()})
    path = tmp_path / "model.intlm"
    path.write_bytes(export.model_bytes(run, "0" * 64))
    key = stream_key(11, SAMPLE_TENSOR, 0, 0)
    n = 300_000
    draws = mix_array(np.uint64(key) ^ mix_array(np.arange(n, dtype=np.uint64) + np.uint64(GOLDEN))) >> np.uint64(32)
    want = (draws >> np.uint64(24)).astype(np.uint8)
    assert [int(choose(np.zeros((1, 256)), 16, 0, [key], i)[0]) for i in range(50)] == list(want[:50])
    assert np.count_nonzero((draws & np.uint64(0xFFFF00)) == 0) > 0  # r = draw >> 8 is a multiple of 2**16
    done = subprocess.run([runtime, path, "--length", str(n), "--seed", "11"], capture_output=True, check=True)
    assert done.stdout == want.tobytes()


# --- other targets, where their tools are installed ----------------------------------------------

ARM_GCC, QEMU_ARM = shutil.which("arm-none-eabi-gcc"), shutil.which("qemu-system-arm")


@pytest.mark.skipif(not (ARM_GCC and QEMU_ARM), reason="no arm-none-eabi-gcc or qemu-system-arm")
def test_cortex_m0_writes_the_bytes_python_writes(tmp_path):
    """On an emulated Cortex-M0 (no FPU, no divider, no C library: tests/cortex_m0), a model with
    context tables and context logits samples the bytes the Python sampler does, and the program
    links no soft-float helper (__aeabi_f*, __aeabi_d*)."""
    from intlm.sample import generate

    cfg = tiny_config(width=32, mlp_ratio=2, context_bits=8, context_order=3, context_logits=1)
    run = Run.fresh(cfg, random_params(cfg, np.random.default_rng(7)))
    data = export.model_bytes(run, "0" * 64)
    (tmp_path / "model.c").write_text(f"const unsigned char model_intlm[] = {{{','.join(map(str, data))}}};\n"
                                      f"const unsigned int model_intlm_len = {len(data)};\n")
    here = Path(__file__).parent / "cortex_m0"
    elf = tmp_path / "intlm.elf"
    build = [ARM_GCC, "-mcpu=cortex-m0", "-mthumb", "-std=c99", "-O2", "-Wall", "-Werror", "-ffreestanding",
             "-nostdlib", "-I", str(export.runtime_source().parent), "-T", str(here / "microbit.ld"),
             '-DPROMPT="ROMEO."', "-DLENGTH=120", "-DTEMPERATURE_Q4=11", "-DTOP_K=40", "-DSEED=3", "-o", str(elf),
             str(here / "main.c"), str(tmp_path / "model.c"), "-lgcc"]
    done = subprocess.run(build, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    symbols = subprocess.run([ARM_GCC.replace("gcc", "nm"), str(elf)], capture_output=True, text=True).stdout.split()
    assert not [s for s in symbols if s.startswith(("__aeabi_f", "__aeabi_d"))]
    done = subprocess.run([QEMU_ARM, "-M", "microbit", "-nographic", "-monitor", "none", "-serial", "none",
                           "-semihosting-config", "enable=on,target=native", "-kernel", str(elf)],
                          capture_output=True, text=True, timeout=120)
    written = (done.stdout + done.stderr).strip()  # semihosting writes to one of them
    assert written == bytes(generate(run.params, cfg, b"ROMEO.", 120, 11, 40, 3)).hex()


CLANG, NODE = shutil.which("clang"), shutil.which("node")
WASI_RUN = ('const w = new (await import("node:wasi")).WASI({version: "preview1", args: process.argv.slice(1), '
            'preopens: {".": "."}}); const {instance} = await WebAssembly.instantiate((await import("node:fs"))'
            '.readFileSync(process.argv[1]), w.getImportObject()); process.exitCode = w.start(instance);')


@pytest.mark.skipif(not (CLANG and NODE), reason="no clang or node")
def test_webassembly_writes_the_bytes_python_writes(tmp_path):
    """Built for WebAssembly (wasm32-wasi) and run by Node's WASI, the runtime samples what Python
    does; skipped where clang has no WASI C library."""
    from intlm.sample import generate

    cfg = tiny_config(context_bits=8, context_order=4)
    run = Run.fresh(cfg, random_params(cfg, np.random.default_rng(8)))
    (tmp_path / "model.intlm").write_bytes(export.model_bytes(run, "0" * 64))
    done = subprocess.run([CLANG, "--target=wasm32-wasi", "-std=c99", "-O2", "-Wall", "-Werror", "-o",
                           str(tmp_path / "intlm-run.wasm"), str(export.runtime_source())], capture_output=True, text=True)
    if done.returncode != 0 and "file not found" in done.stderr:
        pytest.skip("clang has no WASI C library (wasi-libc)")
    assert done.returncode == 0, done.stderr
    options = ["--prompt", "the ", "--length", "150", "--temperature", "1.5", "--top-k", "9", "--seed", "12"]
    done = subprocess.run([NODE, "--no-warnings", "--input-type=module", "-e", WASI_RUN, "intlm-run.wasm",
                           "model.intlm", *options], capture_output=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"the " + bytes(generate(run.params, cfg, b"the ", 150, 24, 9, 12))
