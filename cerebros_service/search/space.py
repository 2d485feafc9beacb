"""The Cerebros-style search space: an architecture is a plain, JSON-serializable dict.

Coordinates (see docs/search.md): a node is ``[level, unit]``; ``[-1, 0]`` is the
input; levels ``0 .. len(levels) - 2`` are hidden; the last level is the output
level with a single unit. ``edges`` hold ``[source, target]`` pairs with
``source level < target level``; ``laterals`` hold ``[[l, i], [l, j]]`` with
``i < j`` inside one hidden level. Both rules together make every architecture a
DAG whose topological order is simply (level, unit).

Optional keys: ``merging`` ("concatenate", the default, or "add") on the
architecture; ``batchnorm`` (bool) and ``dropout`` (rate) on a hidden unit.

Wiring follows Cerebros' rules by default (``wiring="cerebros"``) or the earlier
Poisson sampler (``wiring="poisson"``); docs/search.md states both, side by side
with Cerebros'. No edge spans more than ``max_skip_depth`` levels.

Only the numpy Generator passed in is used, so the same seed gives the same
architectures.
"""

from __future__ import annotations

import copy
import math
from collections import defaultdict

import numpy as np

from ..settings import KNOWN_ACTIVATIONS, OUTPUT_ACTIVATION, SpaceSettings

INPUT = (-1, 0)
MERGINGS = ("concatenate", "add")  # how a unit merges its predecessors (build.py)

Node = tuple[int, int]
Edge = tuple[Node, Node]


# --------------------------------------------------------------------------- sampling

def sample_architecture(space: SpaceSettings, input_dim: int, output_units: int,
                        rng: np.random.Generator) -> dict:
    """Draw one architecture: levels and units first (its moiety), then the wiring."""
    return wire(sample_moiety(space, input_dim, output_units, rng), space, rng)


def sample_moiety(space: SpaceSettings, input_dim: int, output_units: int,
                  rng: np.random.Generator) -> dict:
    """Levels, units, neurons and activations, without any connection yet."""
    n_hidden = int(rng.integers(space.min_levels, space.max_levels + 1))
    levels = [{"units": [sample_unit(space, rng) for _ in range(
        int(rng.integers(space.min_units_per_level, space.max_units_per_level + 1)))]}
        for _ in range(n_hidden)]
    levels.append(output_level(output_units))
    arch = {"input_dim": int(input_dim), "levels": levels, "edges": [], "laterals": [],
            "dropout": float(space.dropout)}
    if space.merging_strategy != "concatenate":
        arch["merging"] = space.merging_strategy
    if space.learning_rates:
        arch["learning_rate"] = float(space.learning_rates[int(rng.integers(len(space.learning_rates)))])
    return arch


def wire(arch: dict, space: SpaceSettings, rng: np.random.Generator) -> dict:
    """``arch`` with freshly drawn edges and laterals (its levels and units as they are)."""
    sizes = level_sizes(arch)
    edges: set[Edge] = set()
    for node in all_nodes(sizes)[1:]:
        edges |= draw_predecessors(node, sizes, space, rng)
    edges |= _wire_orphans(edges, sizes, space, rng)
    laterals = _draw_laterals(sizes, space, rng)
    return _with_wiring(arch, edges, laterals)


class ArchitectureSampler:
    """Fresh architectures in Cerebros' moieties: each drawn set of levels, units and
    neurons is wired ``space.tries_per_moiety`` times, each time anew, before the next."""

    def __init__(self, space: SpaceSettings, input_dim: int, output_units: int, rng: np.random.Generator):
        self.space, self.input_dim, self.output_units, self.rng = space, input_dim, output_units, rng
        self._moiety: dict | None = None
        self._wirings_left = 0

    def draw(self) -> dict:
        if self._wirings_left <= 0 or self._moiety is None:
            self._moiety = sample_moiety(self.space, self.input_dim, self.output_units, self.rng)
            self._wirings_left = max(1, int(self.space.tries_per_moiety))
        self._wirings_left -= 1
        return wire(copy.deepcopy(self._moiety), self.space, self.rng)


def sample_unit(space: SpaceSettings, rng: np.random.Generator) -> dict:
    if space.neuron_choices:
        neurons = int(space.neuron_choices[int(rng.integers(len(space.neuron_choices)))])
    else:
        neurons = int(rng.integers(space.min_neurons, space.max_neurons + 1))
    activation = space.activations[int(rng.integers(len(space.activations)))]
    unit = {"neurons": neurons, "activation": str(activation)}
    if space.bnorm_or_dropout == "bnorm":
        unit["batchnorm"] = True
    elif space.bnorm_or_dropout == "dropout" and space.dropout_rate > 0:
        unit["dropout"] = float(space.dropout_rate)
    return unit


def output_level(output_units: int) -> dict:
    return {"units": [{"neurons": int(output_units), "activation": OUTPUT_ACTIVATION}]}


def draw_predecessors(node: Node, sizes: list[int], space: SpaceSettings,
                      rng: np.random.Generator) -> set[Edge]:
    """The edges into ``node`` from earlier levels, by the space's wiring rule.

    Only levels at most ``max_skip_depth`` before the node are drawn from; a unit
    that drew none takes one unit of the level just before.
    """
    if space.wiring == "poisson":
        chosen = _poisson_predecessors(node, sizes, space, rng)
    else:
        chosen = _cerebros_predecessors(node, sizes, space, rng)
    if not chosen:  # every unit needs a predecessor: take one from the nearest level
        source_level = node[0] - 1
        chosen.add(((source_level, int(rng.integers(_level_size(sizes, source_level)))), node))
    return chosen


def _source_levels(level: int, space: SpaceSettings) -> range:
    """Earlier levels a unit of ``level`` may read, nearest first (-1 is the input)."""
    farthest = max(-1, level - max(1, space.max_skip_depth))
    return range(level - 1, farthest - 1, -1)


def _cerebros_predecessors(node: Node, sizes: list[int], space: SpaceSettings,
                           rng: np.random.Generator) -> set[Edge]:
    """Cerebros' rule: a fixed count per earlier level, proportional to its width, drawn with replacement.

    A first-level unit reads the input ceil(affinity_first) times; a later one draws
    ceil(affinity_main * decay ** distance * units) from each earlier level; the output
    unit draws ceil(final_to_kminus1 * units) more from the last hidden level. Repeats
    collapse into one edge (a repeated input would only add parameters).
    """
    level, _ = node
    output_index = len(sizes) - 1
    chosen: set[Edge] = set()
    for source_level in _source_levels(level, space):
        distance = level - source_level
        available = _level_size(sizes, source_level)
        if level == 0:
            count = math.ceil(space.predecessor_affinity_first * available)
        else:
            count = math.ceil(space.predecessor_affinity_main * space.predecessor_decay ** distance * available)
        if level == output_index and distance == 1:
            count += math.ceil(space.predecessor_affinity_final_to_kminus1 * available)
        for unit in rng.integers(available, size=count):
            chosen.add(((source_level, int(unit)), node))
    return chosen


def _poisson_predecessors(node: Node, sizes: list[int], space: SpaceSettings,
                          rng: np.random.Generator) -> set[Edge]:
    """The earlier sampler: a Poisson number of distinct units per level, mean affinity * decay**(distance-1)."""
    level, _ = node
    chosen: set[Edge] = set()
    for source_level in _source_levels(level, space):
        distance = level - source_level
        available = _level_size(sizes, source_level)
        expected = space.predecessor_affinity * space.predecessor_decay ** (distance - 1)
        count = min(int(rng.poisson(expected)), available)
        for unit in rng.choice(available, size=count, replace=False):
            chosen.add(((source_level, int(unit)), node))
    return chosen


def _wire_orphans(edges: set[Edge], sizes: list[int], space: SpaceSettings,
                  rng: np.random.Generator) -> set[Edge]:
    """A node no later unit reads is wired forward by a skip of depth in [min, max] skip depth.

    The depth is capped by the levels left, so the target always exists. Once
    every non-output node has a forward successor, every node reaches the output.
    """
    output_index = len(sizes) - 1
    has_successor = {src for src, _ in edges}
    added: set[Edge] = set()
    for node in all_nodes(sizes)[:-1]:  # the output unit is no orphan
        if node in has_successor:
            continue
        levels_left = output_index - node[0]
        low = min(space.min_skip_depth, levels_left)
        high = max(low, min(space.max_skip_depth, levels_left))
        target_level = node[0] + int(rng.integers(low, high + 1))
        target = (target_level, int(rng.integers(sizes[target_level])))
        added.add((node, target))
    return added


def _draw_laterals(sizes: list[int], space: SpaceSettings, rng: np.random.Generator) -> set[Edge]:
    """Unit j of a hidden level reads each earlier unit i of its level (nearest first) with
    probability p * decay**(j - i); a run of ``max_consecutive_laterals`` successes in a row
    makes the next try fail; at most ``max_laterals_per_level`` per level."""
    laterals: set[Edge] = set()
    for level, n_units in enumerate(sizes[:-1]):
        made = 0
        for j in range(1, n_units):
            run = 0
            for i in range(j - 1, -1, -1):
                if made >= space.max_laterals_per_level:
                    break
                hit = rng.random() < space.lateral_probability * space.lateral_decay ** (j - i)
                if hit and run < space.max_consecutive_laterals:
                    laterals.add(((level, i), (level, j)))
                    made += 1
                    run += 1
                else:
                    run = 0
    return laterals


# --------------------------------------------------------------------------- repair

def repair_architecture(arch: dict, space: SpaceSettings, rng: np.random.Generator) -> dict:
    """Make an edited architecture valid again (used after mutation and crossover).

    Drops edges and laterals that point nowhere or backwards and edges spanning more
    than ``max_skip_depth`` levels, gives every unit a predecessor, wires orphans
    forward and keeps the lateral cap.
    """
    sizes = level_sizes(arch)
    nodes = set(all_nodes(sizes))
    edges = {e for e in _as_pairs(arch.get("edges", []))
             if e[0] in nodes and e[1] in nodes and e[0][0] < e[1][0] and e[1] != INPUT
             and e[1][0] - e[0][0] <= space.max_skip_depth}
    per_level: dict[int, int] = defaultdict(int)
    laterals: set[Edge] = set()
    for (src, dst) in sorted(_as_pairs(arch.get("laterals", []))):
        ok = (src in nodes and dst in nodes and src[0] == dst[0] and 0 <= src[0] < len(sizes) - 1
              and src[1] < dst[1] and per_level[src[0]] < space.max_laterals_per_level)
        if ok:
            laterals.add((src, dst))
            per_level[src[0]] += 1
    has_predecessor = {dst for _, dst in edges}
    for node in all_nodes(sizes)[1:]:
        if node not in has_predecessor:
            source_level = node[0] - 1
            edges.add(((source_level, int(rng.integers(_level_size(sizes, source_level)))), node))
    edges |= _wire_orphans(edges, sizes, space, rng)
    return _with_wiring(arch, edges, laterals)


# --------------------------------------------------------------------------- checking

def check_architecture(arch: dict, space: SpaceSettings | None = None) -> None:
    """Raise ValueError naming the first problem; with ``space``, also check its ranges."""
    if not isinstance(arch, dict):
        raise ValueError(f"architecture must be a dict, got {type(arch).__name__}")
    for key in ("input_dim", "levels", "edges", "laterals"):
        if key not in arch:
            raise ValueError(f"architecture lacks {key!r}")
    if not isinstance(arch["input_dim"], int) or arch["input_dim"] < 1:
        raise ValueError(f"input_dim must be a positive int, got {arch['input_dim']!r}")
    levels = arch["levels"]
    if not isinstance(levels, list) or not levels:
        raise ValueError("levels must be a non-empty list (the last one is the output level)")
    dropout = arch.get("dropout", 0.0)
    if not (isinstance(dropout, (int, float)) and 0.0 <= dropout < 1.0):
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    merging = arch.get("merging", "concatenate")
    if merging not in MERGINGS:
        raise ValueError(f"merging must be one of {', '.join(MERGINGS)}, got {merging!r}")
    if "learning_rate" in arch:
        rate = arch["learning_rate"]
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 < rate <= 10.0:
            raise ValueError(f"learning_rate must be a number in (0, 10], got {rate!r}")
    for index, level in enumerate(levels):
        _check_level(index, level, is_output=index == len(levels) - 1)
    sizes = level_sizes(arch)
    nodes = set(all_nodes(sizes))
    edges = _checked_pairs(arch["edges"], "edge")
    laterals = _checked_pairs(arch["laterals"], "lateral")
    for src, dst in edges:
        if src not in nodes or dst not in nodes:
            raise ValueError(f"edge {_show(src, dst)} names a unit that does not exist")
        if src[0] >= dst[0]:
            raise ValueError(f"edge {_show(src, dst)} does not go to a later level (cycles are not allowed)")
    for src, dst in laterals:
        if src not in nodes or dst not in nodes or src[0] != dst[0] or src[0] < 0:
            raise ValueError(f"lateral {_show(src, dst)} must join two existing units of one hidden level")
        if src[1] >= dst[1]:
            raise ValueError(f"lateral {_show(src, dst)} must go from a lower to a higher unit index (cycles are not allowed)")
    if len(set(edges) | set(laterals)) != len(edges) + len(laterals):
        raise ValueError("architecture repeats a connection")
    _check_graph(all_nodes(sizes), edges + laterals)
    if space is not None:
        _check_ranges(arch, space)


def _check_level(index: int, level, is_output: bool) -> None:
    units = level.get("units") if isinstance(level, dict) else None
    if not isinstance(units, list) or not units:
        raise ValueError(f"level {index} must be a dict with a non-empty 'units' list")
    if is_output and len(units) != 1:
        raise ValueError(f"the output level (level {index}) must hold exactly one unit, got {len(units)}")
    for u, unit in enumerate(units):
        neurons = unit.get("neurons") if isinstance(unit, dict) else None
        if not isinstance(neurons, int) or isinstance(neurons, bool) or neurons < 1:
            raise ValueError(f"unit [{index}, {u}]: neurons must be a positive int, got {neurons!r}")
        if not isinstance(unit.get("batchnorm", False), bool):
            raise ValueError(f"unit [{index}, {u}]: batchnorm must be true or false, got {unit['batchnorm']!r}")
        rate = unit.get("dropout", 0.0)
        if isinstance(rate, bool) or not (isinstance(rate, (int, float)) and 0.0 <= rate < 1.0):
            raise ValueError(f"unit [{index}, {u}]: dropout must be in [0, 1), got {rate!r}")
        activation = unit.get("activation")
        if is_output and activation != OUTPUT_ACTIVATION:
            raise ValueError(f"the output unit's activation must be {OUTPUT_ACTIVATION!r}, got {activation!r}")
        if not is_output and activation not in KNOWN_ACTIVATIONS:
            raise ValueError(f"unit [{index}, {u}]: unknown activation {activation!r}; "
                             f"use one of {', '.join(sorted(KNOWN_ACTIVATIONS))}")


def _check_graph(nodes: list[Node], connections: list[Edge]) -> None:
    """Every unit has a predecessor, is reachable from the input and reaches the output; no cycle."""
    successors: dict[Node, list[Node]] = defaultdict(list)
    predecessors: dict[Node, list[Node]] = defaultdict(list)
    for src, dst in connections:
        successors[src].append(dst)
        predecessors[dst].append(src)
    indegree = {n: len(predecessors[n]) for n in nodes}
    ready = [n for n in nodes if indegree[n] == 0]
    seen = 0
    while ready:
        node = ready.pop()
        seen += 1
        for nxt in successors[node]:
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                ready.append(nxt)
    if seen != len(nodes):
        raise ValueError("architecture has a cycle")
    for node in nodes[1:]:
        if not predecessors[node]:
            raise ValueError(f"unit {list(node)} has no predecessor")
    reachable = _closure(INPUT, successors)
    reaching = _closure(nodes[-1], predecessors)
    for node in nodes:
        if node not in reachable:
            raise ValueError(f"unit {list(node)} is not reachable from the input")
        if node not in reaching:
            raise ValueError(f"unit {list(node)} does not reach the output")


def _check_ranges(arch: dict, space: SpaceSettings) -> None:
    hidden = arch["levels"][:-1]
    if not space.min_levels <= len(hidden) <= space.max_levels:
        raise ValueError(f"{len(hidden)} hidden levels, outside [{space.min_levels}, {space.max_levels}]")
    for index, level in enumerate(hidden):
        n = len(level["units"])
        if not space.min_units_per_level <= n <= space.max_units_per_level:
            raise ValueError(f"level {index} has {n} units, outside "
                             f"[{space.min_units_per_level}, {space.max_units_per_level}]")
        for u, unit in enumerate(level["units"]):
            neurons, activation = unit["neurons"], unit["activation"]
            fits = (neurons in space.neuron_choices if space.neuron_choices
                    else space.min_neurons <= neurons <= space.max_neurons)
            if not fits:
                raise ValueError(f"unit [{index}, {u}] has {neurons} neurons, outside the space")
            if activation not in space.activations:
                raise ValueError(f"unit [{index}, {u}] uses {activation!r}, not in {space.activations}")
    for src, dst in _as_pairs(arch["edges"]):
        if dst[0] - src[0] > space.max_skip_depth:
            raise ValueError(f"edge {_show(src, dst)} spans {dst[0] - src[0]} levels, more than "
                             f"max_skip_depth ({space.max_skip_depth})")
    per_level: dict[int, int] = defaultdict(int)
    for (src, _dst) in _as_pairs(arch["laterals"]):
        per_level[src[0]] += 1
    for level, count in per_level.items():
        if count > space.max_laterals_per_level:
            raise ValueError(f"level {level} has {count} laterals, more than {space.max_laterals_per_level}")


# --------------------------------------------------------------------------- helpers

def architecture_summary(arch: dict) -> dict:
    """Shape at a glance for events and results: units per level and neurons of each unit."""
    return {
        "levels": [len(level["units"]) for level in arch["levels"]],
        "neurons": [[unit["neurons"] for unit in level["units"]] for level in arch["levels"]],
        "activations": [[unit["activation"] for unit in level["units"]] for level in arch["levels"]],
        "edges": len(arch["edges"]),
        "laterals": len(arch["laterals"]),
        **({"learning_rate": arch["learning_rate"]} if "learning_rate" in arch else {}),
    }


def level_sizes(arch: dict) -> list[int]:
    return [len(level["units"]) for level in arch["levels"]]


def all_nodes(sizes: list[int]) -> list[Node]:
    """Input first, then (level, unit) in topological order; the output unit is last."""
    return [INPUT] + [(level, unit) for level, n in enumerate(sizes) for unit in range(n)]


def predecessors_of(arch: dict) -> dict[Node, list[Node]]:
    """For each unit, its inputs in a fixed order (sorted coordinates): what build.py concatenates."""
    result: dict[Node, list[Node]] = defaultdict(list)
    for src, dst in _as_pairs(arch["edges"]) + _as_pairs(arch["laterals"]):
        result[dst].append(src)
    return {node: sorted(srcs) for node, srcs in result.items()}


def canonical_key(arch: dict) -> str:
    """A stable text form, for spotting duplicate architectures."""
    import json  # stdlib, only for a deterministic key

    return json.dumps(arch, sort_keys=True, separators=(",", ":"))


def _level_size(sizes: list[int], level: int) -> int:
    return 1 if level == -1 else sizes[level]


def _with_wiring(arch: dict, edges: set[Edge], laterals: set[Edge]) -> dict:
    out = dict(arch)
    out["edges"] = [[list(s), list(d)] for s, d in sorted(edges)]
    out["laterals"] = [[list(s), list(d)] for s, d in sorted(laterals)]
    return out


def _as_pairs(raw) -> list[Edge]:
    return [((int(s[0]), int(s[1])), (int(d[0]), int(d[1]))) for s, d in raw]


def _checked_pairs(raw, what: str) -> list[Edge]:
    if not isinstance(raw, list):
        raise ValueError(f"{what}s must be a list of [[level, unit], [level, unit]] pairs")
    try:
        pairs = _as_pairs(raw)
    except (TypeError, ValueError, IndexError) as exc:
        raise ValueError(f"{what}s must be [[level, unit], [level, unit]] pairs of ints: {exc}") from exc
    for (s, d), item in zip(pairs, raw):
        if len(item) != 2 or len(item[0]) != 2 or len(item[1]) != 2:
            raise ValueError(f"{what} {item!r} must be [[level, unit], [level, unit]]")
    return pairs


def _closure(start: Node, graph: dict[Node, list[Node]]) -> set[Node]:
    seen, stack = {start}, [start]
    while stack:
        for nxt in graph[stack.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def _show(src: Node, dst: Node) -> str:
    return f"[{list(src)}, {list(dst)}]"
