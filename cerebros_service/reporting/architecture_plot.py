"""The best architecture drawn as a graph: levels as columns, units as boxes.

Edges between neighbouring levels are straight grey arrows, skip connections (an
edge spanning two or more levels) blue arcs, laterals (one unit feeding another of
its own level) orange dashed arcs beside the column. Arrows are clipped to the
boxes they join, so they start and end at box borders.
"""

from __future__ import annotations

from pathlib import Path

from .plots import BEST, INK, PALETTE, new_figure, save

NEIGHBOUR = "#6b7280"
SKIP = PALETTE[0]
LATERAL = "#ea580c"
HIDDEN_FILL, INPUT_FILL, OUTPUT_FILL = "#e0ecff", "#e5e7eb", "#ffe4d5"
MAX_WIDTH_IN, MAX_HEIGHT_IN = 26.0, 18.0
BOX_W, BOX_H = 0.62, 0.56  # in data units: one level apart is 1.0


def node_positions(arch: dict) -> dict[tuple[int, int], tuple[float, float]]:
    """(level, unit) → (x, y): the input at x=0, level l at x=l+1, units centred top to bottom."""
    positions = {(-1, 0): (0.0, 0.0)}
    for level, spec in enumerate(arch["levels"]):
        count = len(spec["units"])
        for unit in range(count):
            positions[(level, unit)] = (float(level + 1), (count - 1) / 2.0 - unit)
    return positions


def edge_kinds(arch: dict) -> dict[str, list]:
    """Edges split into neighbour (span 1), skip (span ≥ 2) and lateral (same level) connections."""
    kinds: dict[str, list] = {"neighbour": [], "skip": [], "lateral": []}
    for source, target in arch.get("edges", []):
        kinds["neighbour" if target[0] - source[0] == 1 else "skip"].append((tuple(source), tuple(target)))
    kinds["lateral"] = [(tuple(a), tuple(b)) for a, b in arch.get("laterals", [])]
    return kinds


def _bend(kind: str, source, target, positions) -> tuple[float, float]:
    """(arc3 rad, y of the arc's peak, 0 for straight) for one arrow.

    Skip connections round the outside of the stack (upper half over the top, lower
    half underneath), further out the more levels they span; laterals bulge to the
    right of their column. arc3's curve peaks at rad/2 × the chord's length.
    """
    (xa, ya), (xb, yb) = positions[source], positions[target]
    if kind == "lateral":
        bulge = 0.14 + 0.06 * abs(target[1] - source[1])
        return -2 * bulge / max(abs(ya - yb), 1e-6), 0.0
    if kind != "skip":
        return 0.0, 0.0
    bulge = min(2.2, 0.45 + 0.3 * (target[0] - source[0] - 2))
    outward = 1.0 if (ya + yb) / 2 >= 0 else -1.0
    chord = max(((xb - xa) ** 2 + (yb - ya) ** 2) ** 0.5, 1e-6)
    return -outward * 2 * bulge / chord, (ya + yb) / 2 + outward * bulge


def plot_architecture(best: dict | None, path: Path, output_label: str = "output") -> Path:
    from matplotlib.lines import Line2D
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    arch = (best or {}).get("architecture")
    if not arch:
        figure, (ax,) = new_figure(6, 3)
        ax.axis("off")
        ax.text(0.5, 0.5, "no best architecture recorded", ha="center", va="center", color="#6b7280")
        return save(figure, path)

    positions = node_positions(arch)
    kinds = edge_kinds(arch)
    arrows = [(kind, source, target, *_bend(kind, source, target, positions))
              for kind, edges in kinds.items() for source, target in edges
              if source in positions and target in positions]  # a malformed record: draw what is drawable
    columns = len(arch["levels"]) + 1
    tallest = max(len(level["units"]) for level in arch["levels"])
    ys = [y for _, y in positions.values()]
    top = max([max(ys) + BOX_H / 2] + [peak for *_, peak in arrows if peak > 0]) + 0.25
    bottom = min([min(ys) - BOX_H / 2] + [peak for *_, peak in arrows if peak < 0]) - 0.75  # room for labels
    left, right = -0.6, columns - 0.4
    # One inch per data unit in both directions: arc3 bends in display space, so equal
    # scales keep the bulges computed in data units true on the page.
    scale = min(1.45, MAX_WIDTH_IN / (right - left), MAX_HEIGHT_IN / (top - bottom))
    font = 9 if scale >= 1.2 and tallest <= 8 else 7
    figure, (ax,) = new_figure(max(6.0, scale * (right - left)), scale * (top - bottom) + 0.9)
    ax.axis("off")

    boxes = {}
    for node, (x, y) in positions.items():
        level, unit = node
        if node == (-1, 0):
            text, fill = f"input\n{arch['input_dim']} features", INPUT_FILL
        elif level == len(arch["levels"]) - 1:
            units = arch["levels"][level]["units"][unit]["neurons"]
            text, fill = f"{output_label}\n{units} unit{'' if units == 1 else 's'}", OUTPUT_FILL
        else:
            spec = arch["levels"][level]["units"][unit]
            text, fill = f"{spec['neurons']}\n{spec['activation']}", HIDDEN_FILL
        box = FancyBboxPatch((x - BOX_W / 2, y - BOX_H / 2), BOX_W, BOX_H,
                             boxstyle="round,pad=0.02,rounding_size=0.08",
                             facecolor=fill, edgecolor=INK, linewidth=0.9, zorder=3)
        ax.add_patch(box)
        ax.text(x, y, text, ha="center", va="center", fontsize=font, color=INK, zorder=4, linespacing=1.15)
        boxes[node] = box

    busy = len(arrows) > 40  # thinner, lighter lines keep a dense graph readable
    styles = {"neighbour": dict(color=NEIGHBOUR, linewidth=0.8 if busy else 1.0),
              "skip": dict(color=SKIP, linewidth=0.8 if busy else 1.4, alpha=0.55 if busy else 1.0),
              "lateral": dict(color=LATERAL, linewidth=1.0 if busy else 1.4, linestyle="--")}
    for kind, source, target, bend, _peak in arrows:
        (xa, ya), (xb, yb) = positions[source], positions[target]
        if kind == "lateral":  # from right border to right border, bulging to the right
            ends = dict(posA=(xa + BOX_W / 2, ya), posB=(xb + BOX_W / 2, yb))
        else:
            ends = dict(posA=(xa, ya), posB=(xb, yb), patchA=boxes[source], patchB=boxes[target])
        ax.add_patch(FancyArrowPatch(**ends, arrowstyle="-|>", mutation_scale=10, zorder=2,
                                     connectionstyle=f"arc3,rad={bend:.4f}", **styles[kind]))

    for column in range(columns):
        name = "input" if column == 0 else ("output" if column == columns - 1 else f"level {column - 1}")
        ax.text(column, bottom + 0.35, name, ha="center", va="center", fontsize=font, color="#6b7280")
    ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)
    ax.set_aspect("equal", adjustable="box")

    legend = [Line2D([], [], color=NEIGHBOUR, label=f"next level ({len(kinds['neighbour'])})"),
              Line2D([], [], color=SKIP, linewidth=1.4, label=f"skip connection ({len(kinds['skip'])})"),
              Line2D([], [], color=LATERAL, linewidth=1.4, linestyle="--",
                     label=f"lateral, within a level ({len(kinds['lateral'])})")]
    ax.legend(handles=legend, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, fontsize=8, frameon=False)
    value = best.get("value")
    params = best.get("params")
    details = [f"trial {best.get('trial')}"]
    if isinstance(value, (int, float)):
        details.append(f"{best.get('metric', 'metric')} {value:#.4g}")
    if isinstance(params, int):
        details.append(f"{params:,} parameters")
    ax.set_title("Best architecture — " + ", ".join(details), color=BEST if value is not None else INK,
                 fontsize=11, loc="left")
    return save(figure, path)
