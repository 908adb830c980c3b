"""Learning curves: a run's ``log.jsonl`` as a :class:`Curve`, and :func:`draw` for several curves.

    from intlm.plot import Curve, curve_of_run, draw
    draw([curve_of_run(Path("runs/a")), curve_of_run(Path("runs/b"))],
         {"bigram": 3.66, "xz -9e given train": 2.47}, Path("curve.png"), title="width 32 vs 64")

A :class:`Curve` is plain lists (minutes, steps, bits/byte), so a study script can build one from
its own records as easily as from a run folder. :func:`draw` uses matplotlib's Agg canvas directly
(no pyplot, no display, no global state) and writes a PNG of a fixed size:
``FIGSIZE`` inches at ``DPI``, so 1440 x 576 pixels.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import IntlmError

DPI = 120
FIGSIZE = (12.0, 4.8)  # inches: two panels side by side
TRAIN_POINTS = 300  # training bits/byte are drawn as at most this many block means
BASELINE_STYLES = [":", "-.", (0, (6, 3)), (0, (1, 3)), (0, (3, 1, 1, 1, 1, 1))]


@dataclass
class Curve:
    """One run's bits/byte: validation points and (optionally) training points.

    ``minutes`` / ``steps`` / ``val_bpb`` are parallel lists (one entry per validation point), as
    are ``train_minutes`` / ``train_steps`` / ``train_bpb``. Minutes are wall time since the run
    began.
    """

    label: str
    minutes: list[float]
    steps: list[int]
    val_bpb: list[float]
    train_minutes: list[float] = field(default_factory=list)
    train_steps: list[int] = field(default_factory=list)
    train_bpb: list[float] = field(default_factory=list)


# ---------------------------------------------------------------- reading a run's log


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _parse(line: str) -> dict | None:
    """One log record, or None for a line that holds none.

    A run killed mid-write leaves a partial line, and a resumed run appends to the same file, so
    the partial record can run into the next session's first one on one line: then the last
    ``{`` starts a whole record (records are flat JSON objects).
    """
    line = line.strip()
    if not line:
        return None
    for start in dict.fromkeys((0, line.rfind("{"))):
        if start < 0:
            continue
        try:
            rec = json.loads(line[start:])
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), int) and _number(rec["step"]) \
                and _number(rec.get("elapsed_s")):
            return rec
    return None


def _with_wall_time(records: list[dict]) -> list[tuple[dict, float]]:
    """Each record with the seconds since the run began, across resumes.

    ``intlm pretrain`` writes ``elapsed_s`` from the start of each invocation, and a resumed
    invocation starts again from the latest checkpoint, so it may repeat steps. A record whose
    step or elapsed time goes backwards starts a new session; that session resumed from the step
    before its first record (from that step itself when the first record is a final one, which
    trains nothing), and its times are offset by the wall time at which that step was first
    reached. Work lost after that checkpoint is not counted. When the new session's elapsed time
    is already past that offset, its log counts from the start of the run, and no offset is added.
    """
    out = []
    reached: dict[int, float] = {}  # step -> wall time of its latest training record
    offset, latest, prev = 0.0, 0.0, None
    for rec in records:
        step, t = rec["step"], float(rec["elapsed_s"])
        if prev is not None and (t < prev["elapsed_s"] or step < prev["step"]):
            start_step = step if "train_bpb" not in rec else step - 1
            base = reached.get(start_step, 0.0 if start_step <= 0 else latest)
            offset = base if t < base else 0.0
        wall = offset + t
        if "train_bpb" in rec:
            reached[step] = wall
        latest = max(latest, wall)
        out.append((rec, wall))
        prev = rec
    return out


def curve_of_run(run_dir: Path, label: str | None = None) -> Curve:
    """The curve in ``run_dir/log.jsonl``.

    Validation points come from ``val_bpb_sample`` (the sampled validation of the progress line)
    and ``val_bpb`` (the full split, at the end of each invocation), training points from
    ``train_bpb``. Unreadable lines (a truncated last line) are skipped; where a step appears more
    than once (steps repeated after a resume) its last record wins, separately for validation
    and training. Points are in step order; ``label`` defaults to the folder's name.
    """
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise IntlmError(f"run folder {run_dir} does not exist")
    if not run_dir.is_dir():
        raise IntlmError(f"{run_dir} is not a run folder")
    log = run_dir / "log.jsonl"
    if not log.is_file():
        raise IntlmError(f"{run_dir} has no log.jsonl (not a run folder of intlm pretrain?)")
    with open(log, encoding="utf-8", errors="replace") as f:
        records = [rec for rec in map(_parse, f) if rec is not None]
    val: dict[int, tuple[float, float]] = {}
    train: dict[int, tuple[float, float]] = {}
    for rec, wall in _with_wall_time(records):
        step = rec["step"]
        for key in ("val_bpb", "val_bpb_sample"):  # the full split first, should one record hold both
            if _number(rec.get(key)):
                val[step] = (wall / 60, float(rec[key]))
                break
        if _number(rec.get("train_bpb")):
            train[step] = (wall / 60, float(rec["train_bpb"]))
    if not val and not train:
        raise IntlmError(f"{log} holds no usable records (no step with train_bpb, val_bpb_sample or val_bpb)")
    vs, ts = sorted(val), sorted(train)
    return Curve(label=label if label is not None else run_dir.resolve().name,
                 minutes=[val[s][0] for s in vs], steps=vs, val_bpb=[val[s][1] for s in vs],
                 train_minutes=[train[s][0] for s in ts], train_steps=ts, train_bpb=[train[s][1] for s in ts])


# ---------------------------------------------------------------- drawing


def _thin(x: list, y: list, points: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ``points`` block means of consecutive (x, y) pairs: fewer points, and less noise."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(y) <= points:
        return x, y
    size = -(-len(y) // points)
    starts = np.arange(0, len(y), size)
    counts = np.diff(np.append(starts, len(y)))
    return np.add.reduceat(x, starts) / counts, np.add.reduceat(y, starts) / counts


def _check(curve: Curve) -> None:
    for kind, lists in (("validation", (curve.minutes, curve.steps, curve.val_bpb)),
                        ("training", (curve.train_minutes, curve.train_steps, curve.train_bpb))):
        if len({len(v) for v in lists}) != 1:
            raise ValueError(f"curve {curve.label!r}: its {kind} minutes, steps and bits/byte differ in length")


def _y_limits(curves: list[Curve], shown: list[np.ndarray], baselines: dict) -> tuple[float, float]:
    """From the lowest point or line to a top that keeps the interesting range readable.

    The top is the highest point, clamped to 0.5 above the highest baseline (so the initial
    8 bits/byte does not squash the range the curves end in), but never below 0.5 above any
    curve's last point (1.0 when there are no baselines), so every curve's end stays in view.
    """
    values = np.concatenate([v for v in shown if len(v)] + [np.asarray(list(baselines.values()), dtype=float)])
    lo, hi = float(values.min()), float(values.max())
    ends = [c.val_bpb[-1] if c.val_bpb else c.train_bpb[-1] for c in curves if c.val_bpb or c.train_bpb]
    cap = max(ends) + (0.5 if baselines else 1.0)
    if baselines:
        cap = max(cap, max(baselines.values()) + 0.5)
    top = min(hi, cap)
    pad = 0.04 * max(top - lo, 0.25)
    return lo - pad, top + pad


def matplotlib_parts() -> tuple:
    """(rcParams, FigureCanvasAgg, Figure) from matplotlib, or one IntlmError naming the extra that
    installs it (matplotlib is optional: intlm[plot])."""
    try:
        from matplotlib import rcParams
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise IntlmError("plotting needs matplotlib: pip install 'intlm[plot]' (or pip install matplotlib)") from None
    return rcParams, FigureCanvasAgg, Figure


def draw(curves: list[Curve], baselines: dict[str, float], out: Path, title: str = "") -> Path:
    """Write a PNG of ``curves``: validation (and training) bits/byte against minutes and steps.

    Left panel against wall-time minutes, right panel against steps. Each curve has one colour:
    validation solid with markers; training (where given) dashed and lighter, thinned to at most
    ``TRAIN_POINTS`` block means. Each baseline is a grey horizontal line in both panels, named with
    its value on the right-hand axis. A legend names the curves. Returns ``out`` (parent folders
    are created).
    """
    rcParams, FigureCanvasAgg, Figure = matplotlib_parts()

    curves = list(curves)
    baselines = {str(k): float(v) for k, v in (baselines or {}).items()}
    for c in curves:
        _check(c)
    if not any(c.val_bpb or c.train_bpb for c in curves):
        raise IntlmError("nothing to plot: no curve has any points")
    out = Path(out)
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax_min, ax_step = fig.subplots(1, 2, sharey=True)
    colours = rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    shown = []
    for i, c in enumerate(curves):
        colour = colours[i % len(colours)]
        for ax, vx, tx in ((ax_min, c.minutes, c.train_minutes), (ax_step, c.steps, c.train_steps)):
            if c.train_bpb:
                x, y = _thin(tx, c.train_bpb, TRAIN_POINTS)
                ax.plot(x, y, color=colour, lw=1.0, ls="--", alpha=0.45, label=f"{c.label} training")
                shown.append(y)
            if c.val_bpb:
                ax.plot(vx, c.val_bpb, color=colour, lw=1.8, marker="o", ms=3.5, label=f"{c.label} validation")
                shown.append(np.asarray(c.val_bpb, dtype=float))
    ordered = sorted(baselines.items(), key=lambda kv: -kv[1])
    for ax in (ax_min, ax_step):
        for j, (name, value) in enumerate(ordered):
            ax.axhline(value, color="0.45", lw=1.0, ls=BASELINE_STYLES[j % len(BASELINE_STYLES)], zorder=1)
        ax.set_xlim(left=0)
        ax.grid(True, color="0.9", lw=0.6)
    ax_min.set_ylim(*_y_limits(curves, shown, baselines))
    ax_min.set_xlabel("wall time (minutes)")
    ax_step.set_xlabel("step")
    ax_min.set_ylabel("bits per byte")
    ax_min.set_title("against wall time", fontsize=10)
    ax_step.set_title("against steps", fontsize=10)
    if ordered:  # the lines' names on an axis right of the plots, where no curve can hide them
        names = ax_step.secondary_yaxis("right")
        names.set_yticks([v for _, v in ordered], labels=[f"{n} {v:.2f}" for n, v in ordered])
        names.tick_params(labelsize=8, colors="0.3", length=3)
    ax_step.legend(loc="upper right", fontsize=8, framealpha=0.9)
    if title:
        fig.suptitle(title)
    return _save(fig, out)


def _save(fig, out: Path) -> Path:
    """Write ``fig`` as a PNG at ``out`` (parent folders created). A character of a run's name or title
    that the font lacks is drawn as a box, without matplotlib's two-line warning for each."""
    import warnings

    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font")
        fig.savefig(out, format="png", dpi=DPI)
    return out


def draw_panels(panels: list, out: Path, title: str = "", xlabel: str = "step") -> Path:
    """Write a PNG of side-by-side panels against one x axis (``xlabel``): each panel is (title, y
    label, {curve label: (xs, ys)}), a line with markers per curve; a label has the same colour in
    every panel, and the first panel's legend names them. For experiments measured at fixed steps
    (scripts/continued/forgetting.py, scripts/continued/blackbox.py). Returns ``out`` (parent folders are created)."""
    rcParams, FigureCanvasAgg, Figure = matplotlib_parts()

    if not panels or not any(curves for _, _, curves in panels):
        raise IntlmError("nothing to plot: no panel has any curve")
    out = Path(out)
    fig = Figure(figsize=(FIGSIZE[0] * len(panels) / 2, FIGSIZE[1]), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    colours = rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    labels = list(dict.fromkeys(label for _, _, curves in panels for label in curves))
    for ax, (name, ylabel, curves) in zip(axes, panels):
        for label, (x, y) in curves.items():
            ax.plot(x, y, color=colours[labels.index(label) % len(colours)], lw=1.8, marker="o", ms=3.5, label=label)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, color="0.9", lw=0.6)
    axes[0].legend(fontsize=8, framealpha=0.9)
    if title:
        fig.suptitle(title)
    return _save(fig, out)
