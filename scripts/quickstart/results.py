"""The README's results: the default model against the lines a reader compares it with.

    python scripts/quickstart/results.py [--out-dir DIR] [--record FILE]

Measures, on the default Shakespeare split, the add-one unigram and bigram baselines and two
compressors twice each: on the validation bytes alone, and given the training split first (bits of
compress(train + validation) minus bits of compress(train), over the validation bytes): the
model has read the training split, so a compressor that has too is the fair line. xz -9e is Python's
lzma (.xz, preset 9 | PRESET_EXTREME); PPMd is pyppmd's variant I at order 8 with 256 MB (skipped,
with a note, when pyppmd is not installed: `pip install pyppmd`). Then draws the study's 60-minute
runs of the default model, with and without context tables (their records in --record, default
scripts/learning/study.jsonl), over those lines and float32 backprop's 5-minute figure. Writes
results.json (the lines, with the CPU and this command) and results.png into --out-dir (default
scripts/quickstart/records-local, git-ignored; the shipped ones: --out-dir scripts/quickstart).
Takes about a minute on 2 cores, all of it compressing.
"""

import argparse
import json
import lzma
import shlex
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "learning"))
from intlm.data import baselines, cache_dir_default, load_corpus  # noqa: E402
from intlm.plot import Curve, draw  # noqa: E402
from study import cpu_name, latest_records  # noqa: E402  (the learning study's script)

RUNS = {"xeon-ctx16-o4-60min": "intlm pretrain (context tables, the default)",
        "xeon-pop8192-60min": "without context tables (--context-bits 0)"}
# Not measured here (no JAX in this repository): issue 30's float32 GRU 128 x 1 trained by backprop
# (JAX, Adam) on the same split, 2-core CPU: 2.56 / 2.46 / 2.37 / 2.34 bits/byte at 1 / 2 / 5 / 10 min.
BACKPROP_5MIN = 2.37


def xz(data: bytes) -> int:
    return len(lzma.compress(data, format=lzma.FORMAT_XZ, preset=9 | lzma.PRESET_EXTREME))


def ppmd(data: bytes) -> int:
    import pyppmd

    encoder = pyppmd.Ppmd8Encoder(8, 256 << 20)
    return len(encoder.encode(data) + encoder.flush())


def compressor_lines(train: bytes, val: bytes) -> dict:
    """Bits/byte of each compressor on ``val`` alone and given ``train`` first (floats: logging only)."""
    sizes = {"xz -9e": xz}
    try:
        import pyppmd  # noqa: F401
        sizes["PPMd order 8"] = ppmd
    except ImportError:
        print("pyppmd is not installed: no PPMd lines (pip install pyppmd)", file=sys.stderr)
    out = {}
    for name, size in sizes.items():
        out[f"{name}, validation alone"] = 8 * size(val) / len(val)
        out[f"{name} given the training split"] = 8 * (size(train + val) - size(train)) / len(val)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out-dir", type=Path, default=HERE / "records-local", help="where results.json and results.png go")
    ap.add_argument("--record", type=Path, default=HERE.parent / "learning" / "study.jsonl",
                    help="the study records holding the 60-minute runs")
    args = ap.parse_args()
    corpus = load_corpus(None, cache_dir_default())
    train, val = (np.ascontiguousarray(a, dtype=np.uint8).tobytes() for a in (corpus.train, corpus.val))
    lines = {**baselines(corpus.train, corpus.val), **compressor_lines(train, val)}
    for name, value in lines.items():
        print(f"{name}: {value:.3f} bits/byte")
    records = {r["name"]: r for r in latest_records([args.record], list(RUNS))}
    curves = [Curve(label=label, minutes=[p["minutes"] for p in records[name]["points"]],
                    steps=[p["step"] for p in records[name]["points"]],
                    val_bpb=[p["val_bpb"] for p in records[name]["points"]]) for name, label in RUNS.items()]
    shown = {k: v for k, v in lines.items() if "alone" not in k}
    shown["float32 GRU 128 x 1, backprop, 5 min"] = BACKPROP_5MIN
    args.out_dir.mkdir(parents=True, exist_ok=True)
    print(draw(curves, shown, args.out_dir / "results.png",
               title="validation bits/byte of the default Shakespeare split, 2-core CPU"))
    record = {"command": "python scripts/quickstart/results.py " + shlex.join(sys.argv[1:]), "cpu": cpu_name(),
              "validation_bytes": len(val), "training_bytes": len(train),
              "lines": {k: round(v, 4) for k, v in lines.items()}, "backprop_5min": BACKPROP_5MIN,
              "runs": {name: records[name]["command"] for name in RUNS}}
    (args.out_dir / "results.json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
