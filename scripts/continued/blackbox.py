"""A black-box objective: writing without the letter e (issue 16).

    python scripts/continued/blackbox.py [--out-dir DIR] [--root runs/experiments] [--steps 60] [--every 10] [--population 512]

From the Shakespeare base (continued.shakespeare_base, reused when there) it runs ``intlm evolve``'s
task for --steps steps at --population, 32-byte samples, three ways: intlm.objectives:lipogram;
intlm.objectives:lipogram_shakespeare (the lipogram plus the Shakespeare trigram log-likelihood);
and the latter with Anchored Weight Decay K = 6. Every --every steps it measures the model itself
(unperturbed): the lipogram score (words without an e minus words with one) and the share of
letters that are e in SAMPLES samples of 32 bytes (the default prompts in turn, seeds 0, 1, ...),
their bits/byte under the Shakespeare trigram model, and the whole Shakespeare validation split's
bits/byte. Prints the table, samples before and after, and the wall times; writes
blackbox.json and the plot blackbox.png into --out-dir (default scripts/continued/records-local,
git-ignored; the shipped ones are beside this script: --out-dir scripts/continued).
"""

import argparse
import dataclasses
import json
import re
from pathlib import Path

from continued import measured_run, shakespeare_base, wall_times
from intlm.backends import get
from intlm.data import cache_dir_default, load_corpus
from intlm.evolve import DEFAULT_PROMPTS, Objective
from intlm.objectives import lipogram, shakespeare_trigram
from intlm.plot import draw_panels
from intlm.run import load_run
from intlm.sample import escape_controls, generate
from intlm.train import evaluate

HERE = Path(__file__).resolve().parent
SAMPLES = 64
LENGTH = 32
RUNS = {  # name -> (objective, anchor decay)
    "lipogram": ("intlm.objectives:lipogram", 0),
    "lipogram + trigram": ("intlm.objectives:lipogram_shakespeare", 0),
    "lipogram + trigram, AWD K = 6": ("intlm.objectives:lipogram_shakespeare", 6),
}
SHOWN = (b"The ", b"KING.\n", b"My lord, ")  # the prompts of the samples printed before and after


def samples(run, count=SAMPLES, length=LENGTH) -> list:
    """The unperturbed model's samples: prompt i % len(DEFAULT_PROMPTS), seed i, temperature 1."""
    return [bytes(generate(run.params, run.cfg, DEFAULT_PROMPTS[i % len(DEFAULT_PROMPTS)], length, 16, 0, i))
            for i in range(count)]


def text_figures(texts: list) -> dict:
    letters = b"".join(re.findall(rb"[A-Za-z]", b"".join(texts)))
    return {"lipogram": sum(lipogram(texts)) / len(texts), "e_share": letters.lower().count(b"e") / max(len(letters), 1),
            "trigram_bpb": -sum(shakespeare_trigram()(texts)) / 256 / sum(len(t) - 2 for t in texts)}


def shown(run) -> list:
    out = []
    for prompt in SHOWN:
        raw = prompt + bytes(generate(run.params, run.cfg, prompt, 160, 16, 0, 1))
        out.append(escape_controls(raw.split(b"\0")[0].decode("utf-8", errors="replace")))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=HERE / "records-local", help="where the record and plot go")
    parser.add_argument("--root", type=Path, default=Path("runs/experiments"))
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--population", type=int, default=512)
    args = parser.parse_args()
    base, base_seconds = shakespeare_base(args.root)
    shakespeare = load_corpus(None, cache_dir_default())
    backend = get("auto")

    def measure(run):
        return {"val_bpb": evaluate(run.params, run.cfg, shakespeare.val, backend), **text_figures(samples(run))}

    base_run = load_run(base)[0]
    runs, texts = {}, {"base": shown(base_run)}
    for i, (name, (spec, k)) in enumerate(RUNS.items()):
        cfg = dataclasses.replace(base_run.cfg, population=args.population, anchor_decay=k)
        points, seconds = measured_run(shakespeare, cfg, args.root / f"evolve-{i}", base, args.steps, args.every,
                                       measure, task=Objective(spec, length=LENGTH))
        runs[name] = {"objective": spec, "anchor_decay": k, "points": points, "seconds": round(seconds, 1)}
        texts[name] = shown(load_run(args.root / f"evolve-{i}")[0])

    print(f"\nthe unperturbed model every {args.every} steps: lipogram score per {LENGTH}-byte sample / share of "
          f"letters that are e / trigram bits/byte of the samples / Shakespeare validation bits/byte")
    print("| step | " + " | ".join(runs) + " |")
    print("|---|" + "---|" * len(runs))
    for j, point in enumerate(next(iter(runs.values()))["points"]):
        cells = [f"{p['lipogram']:.2f} / {p['e_share']:.3f} / {p['trigram_bpb']:.2f} / {p['val_bpb']:.3f}"
                 for p in (r["points"][j] for r in runs.values())]
        print(f"| {point['step']} | " + " | ".join(cells) + " |")
    for name, lines in texts.items():
        print(f"\n{name}:")
        for line in lines:
            print("    " + line.replace("\n", "\n    "))
    print("\n" + wall_times(base_seconds, runs))

    def curves(key):
        return {name: ([p["step"] for p in r["points"]], [p[key] for p in r["points"]]) for name, r in runs.items()}

    draw_panels([("lipogram score per 32-byte sample (higher: fewer e's)", "words without e - words with e",
                  curves("lipogram")),
                 ("Shakespeare trigram bits/byte of those samples", "bits per byte", curves("trigram_bpb")),
                 ("Shakespeare validation bits/byte of the model", "bits per byte", curves("val_bpb"))],
                args.out_dir / "blackbox.png", title=f"intlm evolve from the Shakespeare base, population {args.population}",
                xlabel="step of the evolve run")
    (args.out_dir / "blackbox.json").write_text(json.dumps({"base": str(base), "runs": runs, "samples": texts}, indent=1)
                                        + "\n")


if __name__ == "__main__":
    main()
