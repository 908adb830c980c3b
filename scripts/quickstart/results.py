"""The README's results: the default model against the lines a reader compares it with.

    python scripts/quickstart/results.py [--out-dir DIR] [--record FILE]

Measures, on the default Shakespeare split, the add-one unigram and bigram baselines and the
compressor lines of `intlm eval` (intlm/compressors.py: xz -9e, bzip2 -9 and, with pyppmd installed,
PPMd order 8, each on the validation bytes alone and given the training split first; cached beside
the corpus store): the model has read the training split, so a compressor that has too is the fair
line. Then draws the study's 60-minute runs of the default model, with and without context tables
(their records in --record, default scripts/learning/study.jsonl), over those lines and float32
backprop's 5-minute figure. Writes results.json (the lines, with the CPU and this command) and
results.png into --out-dir (default scripts/quickstart/records-local, git-ignored; the shipped ones:
--out-dir scripts/quickstart). About a minute on 2 cores the first time, all of it compressing.
"""

import argparse
import json
import shlex
import sys
from pathlib import Path


HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "learning"))
from intlm.compressors import cached_lines  # noqa: E402
from intlm.data import baselines, cache_dir_default, load_corpus  # noqa: E402
from intlm.plot import Curve, draw  # noqa: E402
from study import cpu_name, latest_records  # noqa: E402  (the learning study's script)

RUNS = {"xeon-ctx16-o4-60min": "intlm pretrain (context tables, the default)",
        "xeon-pop8192-60min": "without context tables (--context-bits 0)"}
# Not measured here (no JAX in this repository): issue 30's float32 GRU 128 x 1 trained by backprop
# (JAX, Adam) on the same split, 2-core CPU: 2.56 / 2.46 / 2.37 / 2.34 bits/byte at 1 / 2 / 5 / 10 min.
BACKPROP_5MIN = 2.37


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out-dir", type=Path, default=HERE / "records-local", help="where results.json and results.png go")
    ap.add_argument("--record", type=Path, default=HERE.parent / "learning" / "study.jsonl",
                    help="the study records holding the 60-minute runs")
    args = ap.parse_args()
    corpus = load_corpus(None, cache_dir_default())
    lines = baselines(corpus.train, corpus.val)
    for name, (alone, given) in cached_lines(corpus, lambda: print("compressing the splits (once per corpus)")).items():
        lines[f"{name}, validation alone"] = alone
        lines[f"{name} given the training split"] = given
    for name, value in lines.items():
        print(f"{name}: {value:.3f} bits/byte")
    records = {r["name"]: r for r in latest_records([args.record], list(RUNS))}
    curves = [Curve(label=label, minutes=[p["minutes"] for p in records[name]["points"]],
                    steps=[p["step"] for p in records[name]["points"]],
                    val_bpb=[p["val_bpb"] for p in records[name]["points"]]) for name, label in RUNS.items()]
    shown = {k: v for k, v in lines.items() if "alone" not in k and not k.startswith("bzip2")}
    shown["float32 GRU 128 x 1, backprop, 5 min"] = BACKPROP_5MIN
    args.out_dir.mkdir(parents=True, exist_ok=True)
    print(draw(curves, shown, args.out_dir / "results.png",
               title="validation bits/byte of the default Shakespeare split, 2-core CPU"))
    record = {"command": "python scripts/quickstart/results.py " + shlex.join(sys.argv[1:]), "cpu": cpu_name(),
              "validation_bytes": len(corpus.val), "training_bytes": len(corpus.train),
              "lines": {k: round(v, 4) for k, v in lines.items()}, "backprop_5min": BACKPROP_5MIN,
              "runs": {name: records[name]["command"] for name in RUNS}}
    (args.out_dir / "results.json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
