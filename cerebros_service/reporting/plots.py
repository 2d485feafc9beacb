"""The search in pictures (PNG, matplotlib's Agg backend, no display needed).

Each function draws one figure from a RunData and writes it to a path. The
object-oriented API (Figure + FigureCanvasAgg) is used instead of pyplot, so no
global figure state is touched and drawing from a worker thread is safe.
"""

from __future__ import annotations

import math
from pathlib import Path

from .run_data import RunData

DPI = 120
INK = "#1f2933"
GRID = "#d9dee3"
BEST = "#c2410c"
FAILED = "#b91c1c"
PALETTE = ("#2563eb", "#059669", "#7c3aed", "#d97706", "#db2777", "#0891b2", "#65a30d", "#9333ea")


def new_figure(width: float, height: float, columns: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, columns, squeeze=False)[0]
    for ax in axes:
        ax.grid(True, color=GRID, linewidth=0.7)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        ax.tick_params(colors=INK, labelsize=9)
    return figure, list(axes)


def save(figure, path: Path) -> Path:
    figure.savefig(path, format="png", dpi=DPI, facecolor="white")
    return path


def metric_label(data: RunData) -> str:
    better = "higher" if data.direction == "max" else "lower"
    return f"{data.metric} ({better} is better)"


def _no_data(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="#6b7280", fontsize=11)


def _best_so_far(values: list[float | None], direction: str) -> list[float | None]:
    best, line = None, []
    for value in values:
        if value is not None and (best is None or (value > best if direction == "max" else value < best)):
            best = value
        line.append(best)
    return line


def plot_trials(data: RunData, path: Path, by: str = "index") -> Path:
    """Each trial's metric and the best so far, against trial index or time since the start."""
    figure, (ax,) = new_figure(7.5, 4.2)
    xs = [t.get("trial", i) for i, t in enumerate(data.trials)] if by == "index" else data.trial_end_times()
    completed = {t.get("trial") for t in data.completed}
    values = [t.get("value") if t.get("trial") in completed else None for t in data.trials]
    if not any(v is not None for v in values):
        _no_data(ax, "no trial completed")
    else:
        generations = sorted({t.get("generation", 0) for t in data.trials})
        for number, generation in enumerate(generations):
            points = [(x, v) for x, v, t in zip(xs, values, data.trials)
                      if v is not None and t.get("generation", 0) == generation]
            if points:
                label = f"generation {generation}" if len(generations) <= 8 else None
                ax.scatter(*zip(*points), s=34, color=PALETTE[number % len(PALETTE)], alpha=0.85,
                           edgecolor="white", linewidth=0.6, zorder=3, label=label)
        ax.step(xs, _best_so_far(values, data.direction), where="post", color=BEST, linewidth=2,
                label="best so far", zorder=2)
        best = data.ranked()[0]
        best_x = xs[data.trials.index(best)]
        ax.scatter([best_x], [best["value"]], marker="*", s=220, color=BEST, edgecolor="white",
                   linewidth=0.8, zorder=4)
        ax.annotate(f"best: trial {best['trial']}, {best['value']:#.4g}", (best_x, best["value"]),
                    textcoords="offset points", xytext=(8, -14 if data.direction == "max" else 8),
                    fontsize=9, color=BEST)
    failed = [x for x, t in zip(xs, data.trials) if t.get("status") == "failed"]
    if failed:
        ax.scatter(failed, [0.03] * len(failed), marker="x", s=40, color=FAILED, zorder=3,
                   transform=ax.get_xaxis_transform(), label=f"failed ({len(failed)})")
    if by == "index":
        ax.set_xlabel("trial", color=INK)
        ax.xaxis.get_major_locator().set_params(integer=True)
        title = "Trials in order"
    else:
        ax.set_xlabel("seconds since the search started" if data.times_are_wall_clock
                      else "cumulative training time (s)", color=INK)
        title = "Trials over time"
    ax.set_ylabel(metric_label(data), color=INK)
    ax.set_title(f"{title} — {data.run_id}", color=INK, fontsize=11, loc="left")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, frameon=False, loc="best")
    return save(figure, path)


def plot_generations(data: RunData, path: Path) -> Path:
    """Per generation: the best, the mean and a band of one standard deviation around it."""
    figure, (ax,) = new_figure(7.5, 4.2)
    rows = [g for g in data.generations if g.get("mean_fitness") is not None]
    if not rows:
        _no_data(ax, "no generation with a completed trial")
    else:
        xs = [g["generation"] for g in rows]
        mean = [g["mean_fitness"] for g in rows]
        std = [g.get("std_fitness") or 0.0 for g in rows]
        ax.fill_between(xs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                        color=PALETTE[0], alpha=0.18, linewidth=0, label="mean ± std")
        ax.plot(xs, mean, color=PALETTE[0], marker="o", markersize=4, linewidth=1.6, label="mean")
        ax.plot(xs, [g["best_fitness"] for g in rows], color=BEST, marker="o", markersize=5,
                linewidth=2, label="best")
        if len(xs) == 1:  # a band of one point is invisible: show it as an error bar
            ax.errorbar(xs, mean, yerr=std, color=PALETTE[0], capsize=6, linewidth=0)
            ax.set_xlim(xs[0] - 1, xs[0] + 1)
        ax.legend(fontsize=8, frameon=False, loc="best")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("generation", color=INK)
    ax.set_ylabel(metric_label(data), color=INK)
    ax.set_title(f"Generations — {data.run_id}", color=INK, fontsize=11, loc="left")
    return save(figure, path)


def plot_learning_curves(data: RunData, path: Path, top: int = 5) -> Path:
    """The ranking metric and the loss per epoch for the ``top`` best trials."""
    figure, (left, right) = new_figure(10.5, 4.2, columns=2)
    ranked = [t for t in data.ranked() if t.get("history")][:top]
    if not ranked:
        _no_data(left, "no learning curves recorded")
        _no_data(right, "")
    for number, trial in enumerate(ranked):
        color = PALETTE[number % len(PALETTE)]
        history = trial["history"]
        label = f"trial {trial['trial']} ({trial['value']:#.4g})"
        curve = history.get(data.metric) or []
        epochs = list(range(1, len(curve) + 1))
        left.plot(epochs, _gaps(curve), color=color, marker="o", markersize=3, linewidth=1.6, label=label)
        best_epoch = trial.get("best_epoch")
        if best_epoch and best_epoch <= len(curve) and curve[best_epoch - 1] is not None:
            left.scatter([best_epoch], [curve[best_epoch - 1]], marker="*", s=120, color=color,
                         edgecolor="white", zorder=4)
        for key, style in (("loss", "-"), ("val_loss", "--")):
            values = history.get(key) or []
            right.plot(list(range(1, len(values) + 1)), _gaps(values), color=color, linestyle=style,
                       linewidth=1.4, label=label if key == "loss" else None)
    for ax, ylabel, title in ((left, metric_label(data), f"Top {len(ranked) or top}: {data.metric} per epoch"),
                              (right, "loss (solid: training, dashed: validation)", "Loss per epoch")):
        ax.set_xlabel("epoch", color=INK)
        ax.set_ylabel(ylabel, color=INK)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_title(title, color=INK, fontsize=11, loc="left")
    if ranked:
        left.legend(fontsize=8, frameon=False, loc="best", title="★ best epoch", title_fontsize=8)
    return save(figure, path)


def _gaps(values: list) -> list[float]:
    """None (a non-finite value) as NaN, which matplotlib leaves as a gap in the line."""
    return [math.nan if v is None else v for v in values]


def plot_ensemble(data: RunData, path: Path) -> Path:
    """The delivered ensemble's members as horizontal bars of their weights, heaviest on top.

    Each bar is labelled with the trial and its own validation value, so a reader sees
    whether the weight went to the best trials; the single best trial's bar is drawn in
    the colour the other plots give the best.
    """
    members = data.ensemble_members()
    # a bar per member; never shorter than the other plots (the report's images line up)
    figure, (ax,) = new_figure(7.5, max(3.0, 1.4 + 0.28 * len(members)))
    if not members:
        _no_data(ax, "no ensemble was delivered")
    else:
        single_best = ((data.ensemble or {}).get("single_best") or {}).get("trial")
        labels = []
        for member in members:
            value = (member["record"] or {}).get("value")
            labels.append(f"trial {member['trial']}" + (f" ({value:#.4g})" if isinstance(value, (int, float))
                                                         and math.isfinite(value) else ""))
        weights = [float(m["weight"]) if isinstance(m["weight"], (int, float)) else 0.0 for m in members]
        positions = list(range(len(members)))
        colors = [BEST if m["trial"] == single_best else PALETTE[0] for m in members]
        ax.barh(positions, weights, color=colors, height=0.7, zorder=3)
        for y, weight in zip(positions, weights):
            ax.annotate(f"{weight:.3g}", (weight, y), textcoords="offset points", xytext=(4, 0),
                        va="center", fontsize=8, color=INK)
        ax.set_yticks(positions, labels)
        ax.invert_yaxis()  # heaviest first, read from the top
        ax.set_xlim(0, max(weights) * 1.15 if max(weights) > 0 else 1.0)
        ax.grid(False, axis="y")
    ensemble = data.ensemble or {}
    ax.set_xlabel("weight in the ensemble (weights sum to 1)", color=INK)
    ax.set_title(f"Ensemble members ({ensemble.get('method', '?')}; "
                 f"label: trial ({data.metric}); orange: the single best) — {data.run_id}",
                 color=INK, fontsize=10, loc="left")
    return save(figure, path)
