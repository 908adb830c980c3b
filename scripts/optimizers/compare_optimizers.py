"""Every optimiser on the same model, corpus and budgets: EGGROLL, OpenES, SPSA, sep-CMA-ES, CEM.

    python scripts/optimizers/compare_optimizers.py commands [--minutes 2,10,30 | --member-bytes 1,4,16]
    python scripts/optimizers/compare_optimizers.py run [--minutes 2,10,30 | --member-bytes 1,4,16] [--only NAME...]
    python scripts/optimizers/compare_optimizers.py table [--record FILE...]
    python scripts/optimizers/compare_optimizers.py plot --out FILE [--record FILE...]

Each row is one scripts/learning/study.py run (one process, from scratch, on the default Shakespeare split,
the full validation split evaluated at every budget, peak memory recorded) appended to FILE
(default scripts/optimizers/records-local/compare_optimizers.jsonl, git-ignored; the shipped records
are compare_optimizers.jsonl and compare_optimizers_xeon.jsonl beside this script, which ``table``
and ``plot`` read by default, then the local ones). The rows are every optimiser at two model sizes (width
32 x 1 and 64 x 2), each with a small sweep of its own main setting, so no method is compared at a
bad setting. ``commands`` prints one command per row (to run by hand, one at a time, on a quiet
machine); ``run`` runs them in turn (--only: rows whose name contains any of the given strings).
Budgets are training minutes (--minutes, wall time: the comparison) or millions of member-bytes
(--member-bytes: deterministic, to check results on any machine). ``table`` prints every row and,
per optimiser and size, the best of its sweep at each budget; ``plot`` draws the best rows.
"""

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
STUDY = HERE.parent / "learning" / "study.py"  # runs every row
SCRIPTS = HERE.parent
sys.path.insert(0, str(STUDY.parent))
from intlm.config import Config  # noqa: E402
from study import add_report_commands, draw_records, latest_records, short_cpu  # noqa: E402  (the learning study's script)

RECORD = HERE / "compare_optimizers.jsonl"  # the shipped records (tracked)
LOCAL_RECORD = HERE / "records-local" / "compare_optimizers.jsonl"  # where `run` writes unless told (git-ignored)
SIZES = {"w32": {"width": 32, "layers": 1}, "w64x2": {"width": 64, "layers": 2}}
# optimiser -> (its main setting, the values swept, other settings it runs with)
SWEEPS = {
    "eggroll": ("population", (2048, 8192), {}),
    "openes": ("population", (64, 256, 1024), {}),
    "spsa": ("step_shift", (8, 9, 10, 11), {"population": 2, "spsa_rounding": "carry"}),
    "sepcma": ("population", (16, 64, 256, 1024), {}),
    "cem": ("step_shift", (2, 4, 6, 8), {"population": 16}),
}
BACKPROP = "float32 GRU 128 x 1 by backprop (Adam), same data and machine kind: 2.54 / 2.43 / 2.36 bits/byte at 1 / 2 / 5 min"


def rows() -> list:
    """(name, FIELD=VALUE changes) of every row."""
    out = []
    for size, shape in SIZES.items():
        for opt, (setting, values, fixed) in SWEEPS.items():
            for value in values:
                changes = {"optimizer": opt, **shape, **fixed, setting: value}
                tag = "".join(f"{v}-" for k, v in fixed.items() if k != "population")  # e.g. spsa's rounding
                out.append((f"{opt}-{size}-{tag}{setting}{value}", [f"{k}={v}" for k, v in changes.items()]))
    return out


def command(name, changes, args) -> list:
    budget = (["--member-bytes", args.member_bytes] if args.member_bytes else
              ["--minutes", str(max(float(m) for m in args.minutes.split(","))), "--at", args.minutes])
    return [sys.executable, str(STUDY), "run", name, *changes, *budget, "--record", str(args.record)]


def commands(args):
    for name, changes in rows():
        print("python " + shlex.join(command(name, changes, args)[1:]).replace(str(SCRIPTS) + "/", "scripts/"))


def run(args):
    for name, changes in rows():
        if args.only and not any(s in name for s in args.only):
            continue
        subprocess.run(command(name, changes, args), check=True)


def _budget(point, by_bytes):
    return round(point["member_bytes"] / 1e6, 1) if by_bytes else point["minutes"]


def method(record) -> tuple:
    """(optimiser, size) of a record, read through Config so fields a record leaves out take their
    defaults, and rows of other records files (the study's) sort with the comparison's own; the
    size is its SIZES name (w32, w64x2)."""
    cfg = Config.from_json(record["config"])
    shape = {"width": cfg.width, "layers": cfg.layers}
    return cfg.optimizer, next((k for k, v in SIZES.items() if v == shape), f"w{cfg.width}x{cfg.layers}")


def setting(record) -> str:
    """The row's name without its optimiser and size (the swept setting), for the best-of table."""
    prefix = "-".join(method(record)) + "-"
    return record["name"][len(prefix):] if record["name"].startswith(prefix) else record["name"]


def table(args):
    records = latest_records(args.record, args.only)
    by_bytes = any("--member-bytes" in r["command"] for r in records)
    unit = "M member-bytes" if by_bytes else "min"
    budgets = sorted({_budget(p, by_bytes) for r in records for p in r["points"]})
    head = " | ".join(f"{b:g} {unit}" for b in budgets)
    print(f"| row | {head} | member-bytes/s | steps/s | peak MB | CPU |")
    print("|---|" + "---|" * (len(budgets) + 4))
    best = {}
    for r in records:
        at = {_budget(p, by_bytes): p["val_bpb"] for p in r["points"]}
        print(f"| {r['name']} | " + " | ".join(f"{at[b]:.3f}" if b in at else "" for b in budgets)
              + f" | {r.get('member_bytes_per_s', 0):,} | {r['steps_per_s']:.2f} | {r['peak_rss_mb']} | {short_cpu(r['cpu'])} |")
        for b, v in at.items():
            key = (*method(r), short_cpu(r["cpu"]), b)  # a best figure is one machine's
            if key not in best or v < best[key][0]:
                best[key] = (v, setting(r))
    print(f"\nBest of each sweep (bits/byte, row):\n\n| optimiser | size | CPU | {head} |")
    print("|---|---|---|" + "---|" * len(budgets))
    for key in dict.fromkeys(k[:3] for k in best):
        cells = [f"{best[(*key, b)][0]:.3f} ({best[(*key, b)][1]})" if (*key, b) in best else "" for b in budgets]
        print(f"| {' | '.join(key)} | " + " | ".join(cells) + " |")
    print(f"\nCPU: {', '.join(sorted({r['cpu'] for r in records}))}. {BACKPROP}.")


def plot(args):
    best = {}  # per optimiser, size and CPU, the row with the lowest last figure
    for r in latest_records(args.record, args.only):
        key = (*method(r), short_cpu(r["cpu"]))
        if key not in best or r["points"][-1]["val_bpb"] < best[key]["points"][-1]["val_bpb"]:
            best[key] = r
    draw_records(list(best.values()), Path(args.out), "optimisers: validation bits/byte, best of each sweep")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    for name, fn in (("commands", commands), ("run", run)):
        p = sub.add_parser(name)
        p.add_argument("--record", type=Path, default=LOCAL_RECORD)
        p.add_argument("--minutes", default="2,10,30", help="training minutes at which to evaluate")
        p.add_argument("--member-bytes", help="millions of member-bytes at which to evaluate, instead")
        p.set_defaults(fn=fn)
    p.add_argument("--only", nargs="*", help="rows whose name contains one of these")
    add_report_commands(sub, RECORD, LOCAL_RECORD, table, plot)
    args = ap.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
