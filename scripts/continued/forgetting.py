"""Forgetting, and Anchored Weight Decay against it (issue 16).

    python scripts/continued/forgetting.py [--out-dir DIR] [--root runs/experiments] [--steps 300] [--every 50] [--decays 0,3,6]

Trains the Shakespeare base (continued.shakespeare_base: default settings, population 2048, 1000
steps; reused when there), then continues it with ``--init`` on another corpus that ships with every
Python: the top-level ``.py`` files of the standard library (sysconfig's ``stdlib`` folder, sorted;
every 10th file is validation), once per Anchored Weight Decay strength K (0: off), for --steps
steps with the base's settings. Both corpora's whole validation splits are measured every --every
steps. Prints the table and the wall times, writes forgetting.json and the plot forgetting.png into
--out-dir (default scripts/continued/records-local, git-ignored; the shipped ones are beside this
script: --out-dir scripts/continued).
"""

import argparse
import dataclasses
import json
import sysconfig
from pathlib import Path

from continued import measured_run, shakespeare_base, wall_times
from intlm.backends import get
from intlm.data import baselines, cache_dir_default, load_corpus, open_store, prepare
from intlm.plot import draw_panels
from intlm.run import load_run
from intlm.train import evaluate

HERE = Path(__file__).resolve().parent


def stdlib_corpus(root: Path):
    """The Python standard library's top-level .py files, sorted by name, as a prepared store."""
    store = root / "python-stdlib.zarr"
    if not store.exists():
        prepare([str(f) for f in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))], store)
    return open_store(store)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=HERE / "records-local", help="where the record and plot go")
    parser.add_argument("--root", type=Path, default=Path("runs/experiments"))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--decays", default="0,3,6", help="Anchored Weight Decay strengths K, comma-separated")
    args = parser.parse_args()
    decays = [int(k) for k in args.decays.split(",")]
    base, base_seconds = shakespeare_base(args.root)
    shakespeare, python = load_corpus(None, cache_dir_default()), stdlib_corpus(args.root)
    backend = get("auto")

    def measure(run):
        return {"shakespeare": evaluate(run.params, run.cfg, shakespeare.val, backend),
                "python": evaluate(run.params, run.cfg, python.val, backend)}

    base_cfg = load_run(base)[0].cfg
    runs = {}
    for k in decays:
        cfg = dataclasses.replace(base_cfg, anchor_decay=k)
        points, seconds = measured_run(python, cfg, args.root / f"python-awd{k}", base, args.steps, args.every, measure)
        runs[k] = {"points": points, "seconds": round(seconds, 1)}

    print(f"\nvalidation bits/byte, Shakespeare / Python stdlib, continuing {base} on the Python stdlib")
    print("| step | " + " | ".join(f"K = {k}" if k else "AWD off" for k in decays) + " |")
    print("|---|" + "---|" * len(decays))
    for i, point in enumerate(runs[decays[0]]["points"]):
        cells = [f"{runs[k]['points'][i]['shakespeare']:.3f} / {runs[k]['points'][i]['python']:.3f}" for k in decays]
        print(f"| {point['step']} | " + " | ".join(cells) + " |")
    for name, corpus in (("Shakespeare", shakespeare), ("Python stdlib", python)):
        b = baselines(corpus.train, corpus.val)
        print(f"{name}: {len(corpus.train)} train / {len(corpus.val)} validation bytes, "
              f"unigram {b['unigram']:.3f}, bigram {b['bigram']:.3f}")
    label = {k: f"AWD K = {k}" if k else "AWD off" for k in decays}
    print(wall_times(base_seconds, {label[k]: runs[k] for k in decays}))
    curves = {name: {label[k]: ([p["step"] for p in runs[k]["points"]], [p[name] for p in runs[k]["points"]])
                     for k in decays} for name in ("shakespeare", "python")}
    draw_panels([("Shakespeare validation (the old task)", "bits per byte", curves["shakespeare"]),
                 ("Python stdlib validation (the new task)", "bits per byte", curves["python"])],
                args.out_dir / "forgetting.png", title="continued training on the Python stdlib from a Shakespeare model",
                xlabel="step of the continued run")
    (args.out_dir / "forgetting.json").write_text(json.dumps({"base": str(base), "runs": runs}, indent=1) + "\n")


if __name__ == "__main__":
    main()
