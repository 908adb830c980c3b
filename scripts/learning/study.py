"""Wall-clock learning study: validation bits/byte (the full split) at fixed minutes of training.

    python scripts/learning/study.py run NAME [--minutes 10] [--at 1,2,5,10] [--record FILE] [FIELD=VALUE ...]
    python scripts/learning/study.py run NAME --member-bytes 1,4,16 [--eval-bytes N] [FIELD=VALUE ...]
    python scripts/learning/study.py table [--record FILE...] [--only NAME...]
    python scripts/learning/study.py plot [--record FILE...] [--only NAME...] --out study.png

`run` trains one configuration (the default Config with FIELD=VALUE changes, e.g. population=8192)
from scratch on the default corpus for --minutes of training time, evaluates the whole validation
split at each --at minute, and appends one JSON record to FILE (default
scripts/learning/records-local/study.jsonl, git-ignored; the shipped records are
scripts/learning/study.jsonl and fitness_screen.jsonl, given with --record to add to them): the
settings, the command, the CPU, the points (minutes, step, member-bytes, bits/byte), steps/s and
peak memory. One configuration per command, so every row of the table says how to reproduce it;
run them one after another, never two at once. The training clock stops while the study evaluates
(a full evaluation takes a second or two) and starts after a warm-up step that compiles the backend
on a throwaway copy of the run, so the minutes are training minutes. `table` prints every record of
FILE (default: the shipped study.jsonl, then the local records if any; the latest record per name and
CPU, or those whose names contain an --only string) with the CPU each ran on; `plot` draws them over
the baselines of the split.

Any optimiser (FIELD optimizer=...) trains through its own step. With --member-bytes the marks are
millions of member-bytes instead of minutes: training is deterministic, so those figures do not
depend on the machine or its load (only the times beside them do); --eval-bytes evaluates a fixed
spread-out sample of that many validation bytes instead of the whole split.
"""

import argparse
import dataclasses
import json
import resource
import shlex
import sys
import time
from pathlib import Path

from intlm import optimizers
from intlm.backends import get
from intlm.config import Config
from intlm.data import baselines, cache_dir_default, load_corpus
from intlm.run import Run
from intlm.train import evaluate

HERE = Path(__file__).resolve().parent
RECORD = HERE / "study.jsonl"  # the shipped records (tracked)
LOCAL_RECORD = HERE / "records-local" / "study.jsonl"  # where a run writes unless told (git-ignored)


def cpu_name() -> str:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def parse_changes(pairs) -> dict:
    """FIELD=VALUE strings as Config changes, each value typed like the field's default."""
    fields = {f.name: f for f in dataclasses.fields(Config)}
    out = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name not in fields:
            sys.exit(f"error: unknown setting {name!r}; settings: {', '.join(fields)}")
        out[name] = type(fields[name].default)(value)
    return out


def run(args):
    cfg = Config(**parse_changes(args.changes)).check()
    corpus = load_corpus(None, cache_dir_default())
    backend = get(args.backend)
    opt = optimizers.get(cfg.optimizer)
    per_step = opt.member_bytes(cfg)
    opt.step(Run.fresh(cfg), corpus.train, backend)  # compiles the backend; the result is thrown away
    evaluate(Run.fresh(cfg).params, cfg, corpus.val[:4096], backend)
    if args.member_bytes:
        marks = sorted(round(float(m) * 1e6) for m in args.member_bytes.split(","))
    else:
        marks = sorted(float(m) for m in args.at.split(",") if float(m) <= args.minutes)
        if not marks or marks[-1] != args.minutes:
            marks.append(args.minutes)
    r = Run.fresh(cfg)
    points, trained = [], 0.0
    for mark in marks:
        start = time.perf_counter()
        while (r.step * per_step < mark if args.member_bytes else trained + time.perf_counter() - start < mark * 60):
            opt.step(r, corpus.train, backend)
        trained += time.perf_counter() - start
        bpb = evaluate(r.params, cfg, corpus.val, backend, max_bytes=args.eval_bytes)
        points.append({"minutes": round(trained / 60, 3) if args.member_bytes else mark, "step": r.step, "member_bytes": r.step * per_step,
                       "val_bpb": round(bpb, 4)})
        print(f"{args.name}: {trained / 60:.2f} min, step {r.step}, {r.step * per_step / 1e6:g} M member-bytes, "
              f"validation {bpb:.4f} bits/byte, {r.step * per_step / trained:,.0f} member-bytes/s", flush=True)
    record = {"name": args.name, "command": "python scripts/learning/study.py " + shlex.join(sys.argv[1:]),
              "config": cfg.to_json(), "cpu": cpu_name(), "date": time.strftime("%Y-%m-%d %H:%M"),
              "points": points, "steps_per_s": round(r.step / trained, 3),
              "member_bytes_per_s": round(r.step * per_step / trained),
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}
    append_record(args.record, record)


def append_record(path: Path, record: dict):
    """One JSON line more in a record file (its folder made if need be)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def latest_records(paths, only=None) -> list:
    """The last record of each name and CPU in the files ``paths`` (read in turn; a rerun on another
    machine is another row), in the order they first appear; with ``only``, just the names that
    contain one of its strings."""
    latest = {}
    for path in paths:
        for line in open(path):
            if line.strip():
                rec = json.loads(line)
                latest.pop((rec["name"], rec["cpu"]), None)
                latest[(rec["name"], rec["cpu"])] = rec
    return [r for (name, _), r in latest.items() if not only or any(s in name for s in only)]


def short_cpu(name: str) -> str:
    """'AMD EPYC' or 'Intel Xeon' out of /proc/cpuinfo's model name, for a table column."""
    return " ".join(w for w in name.replace("(R)", "").split() if w not in ("Processor", "CPU"))[:24]


def changed(cfg: dict) -> str:
    default = dataclasses.asdict(Config())  # every field (to_json leaves later ones out at their old value)
    return " ".join(f"{k}={v}" for k, v in cfg.items() if default[k] != v) or "defaults"


def table(args):
    records = latest_records(args.record, args.only)
    minutes = sorted({p["minutes"] for r in records for p in r["points"]})
    print("| name | settings | " + " | ".join(f"{m:g} min" for m in minutes) + " | steps/s | peak MB | CPU |")
    print("|---|---|" + "---|" * len(minutes) + "---|---|---|")
    for r in records:
        at = {p["minutes"]: p["val_bpb"] for p in r["points"]}
        cells = " | ".join(f"{at[m]:.3f}" if m in at else "" for m in minutes)
        print(f"| {r['name']} | {changed(r['config'])} | {cells} | {r['steps_per_s']:.2f} | {r['peak_rss_mb']} | {short_cpu(r['cpu'])} |")
    cpus = sorted({r["cpu"] for r in records})
    print(f"\nCPU: {', '.join(cpus)}. Commands:")
    for r in records:
        print(f"    {r['command']}")


def draw_records(records, out: Path, title: str):
    """Each record's validation points against minutes and steps, over the split's baselines."""
    from intlm.compressors import fair_lines
    from intlm.plot import Curve, draw

    corpus = load_corpus(None, cache_dir_default())
    lines = {**baselines(corpus.train, corpus.val), **fair_lines(corpus)}
    curves = [Curve(label=r["name"], minutes=[p["minutes"] for p in r["points"]],
                    steps=[p["step"] for p in r["points"]], val_bpb=[p["val_bpb"] for p in r["points"]])
              for r in records]
    print(draw(curves, lines, out, title=title))


def plot(args):
    draw_records(latest_records(args.record, args.only), Path(args.out), "validation bits/byte, 2-core CPU")


def add_report_commands(sub, record: Path, local: Path, table_fn, plot_fn):
    """The ``table`` and ``plot`` subcommands, reading FILE... (--record; default the shipped
    ``record``, then ``local``, the runs made here, when it exists)."""
    default = [record] + ([local] if local.exists() else [])
    for name, fn in (("table", table_fn), ("plot", plot_fn)):
        p = sub.add_parser(name)
        p.add_argument("--record", type=Path, nargs="+", default=default, help="record files, read in turn")
        p.add_argument("--only", nargs="*", help="rows whose name contains one of these")
        if name == "plot":
            p.add_argument("--out", required=True)
        p.set_defaults(fn=fn)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run")
    p.add_argument("name")
    p.add_argument("changes", nargs="*", help="FIELD=VALUE changes to the default Config")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--at", default="1,2,5,10,20,30,60", help="minutes at which to evaluate")
    p.add_argument("--member-bytes", help="millions of member-bytes at which to evaluate (instead of minutes)")
    p.add_argument("--eval-bytes", type=int, default=0, help="validation bytes to evaluate (0: the whole split)")
    p.add_argument("--backend", default="auto")
    p.add_argument("--record", type=Path, default=LOCAL_RECORD, help="the file a record is appended to")
    p.set_defaults(fn=run)
    add_report_commands(sub, RECORD, LOCAL_RECORD, table, plot)
    args = ap.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
