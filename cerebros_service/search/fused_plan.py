"""How K architectures share one padded superset: the layout of a fused chunk, in numpy.

The fused trainer (fused.py) trains K candidates as ONE set of batched weights.
Every hidden unit position ``(level, unit)`` that any candidate uses becomes a
*slot*, as wide as the widest unit there; slots run in (level, unit) order, a
topological order for every candidate. Only the candidates that have a unit at a
position (its *members*) compute there, so a deep or wide unit that few
candidates have costs only them.

Activations live in one flat *buffer* of rows (features × batch) shared by the
chunk: row 0 is zeros, row 1 is ones, then the normalized input's features (once,
for everybody), then each slot's block, one row per member and output column. A
unit reads its inputs with ONE gather from that buffer: exactly its predecessors'
real rows (in build.py's sorted order), padded to the widest fan-in among the
members with the zero row, then the ones row. Its kernel, stored transposed as
``(width, fan_in + 1)``, holds the standalone Dense kernel's transpose in its
corner and the bias in its last column. Padding costs neither gradients (zero
inputs) nor masks; columns beyond a member's real width are never read by
anybody. Moving weights between a candidate's standalone layout (build.py's layer
names, Keras order) and its slice of the batched arrays is a copy of a corner,
both ways: a fused candidate is saved as an ordinary Keras model, and a
standalone one (from an earlier rung, say) can continue fused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .build import Weights, batchnorm_name, dense_name, unit_dropout, unit_spec, unit_width
from .space import INPUT, Node, all_nodes, level_sizes, predecessors_of

HEAD = "head"
ZERO_ROW, ONES_ROW, FIRST_INPUT_ROW = 0, 1, 2
BATCHNORM_PARTS = ("gamma", "beta", "moving_mean", "moving_variance")


@dataclass
class Reader:
    """One unit position: its members, the buffer rows each one gathers, its kernel's shape."""

    tag: str  # array name prefix
    node: Node | None  # the slot's (level, unit); None for the head
    members: np.ndarray  # (M,) candidate indices that have a unit here, ascending
    fan_in: int  # widest real fan-in among members (the kernel has fan_in + 1 columns)
    width: int  # output rows per member
    rows: np.ndarray  # (M, fan_in + 1) buffer rows to gather, last one the ones row
    fan_ins: np.ndarray  # (M,) each member's real fan-in
    widths: np.ndarray  # (M,) each member's real width
    block_start: int = 0  # first buffer row of this unit's outputs (slots only)

    def position(self, candidate: int) -> int | None:
        """Where ``candidate`` sits among the members (None: it has no unit here)."""
        found = np.flatnonzero(self.members == candidate)
        return int(found[0]) if len(found) else None


@dataclass
class Slot(Reader):
    activations: tuple[str, ...] = ()  # distinct activations used here, chunk-wide
    activation_index: np.ndarray | None = None  # (M,) index into ``activations``
    batchnorm: np.ndarray | None = None  # (M,) 1.0 where the unit normalizes its output
    dropout: np.ndarray | None = None  # (M,) dropout rate

    @property
    def any_batchnorm(self) -> bool:
        return bool(self.batchnorm.any())

    @property
    def any_dropout(self) -> bool:
        return bool((self.dropout > 0).any())


@dataclass
class FusedPlan:
    architectures: list[dict]
    input_dim: int
    output_units: int
    slots: list[Slot]
    head: Reader

    @property
    def size(self) -> int:
        return len(self.architectures)

    def readers(self) -> list[Reader]:
        return [*self.slots, self.head]

    def padded_params(self) -> int:
        """Parameters the fused arrays hold for the whole chunk (what memory and FLOPs scale with)."""
        return sum(len(r.members) * (r.fan_in + 1) * r.width for r in self.readers())


def unit_shapes(arch: dict, output_units: int) -> dict[Node | str, tuple[int, int]]:
    """Each unit's (real fan-in, width) by position (``HEAD`` for the output unit): all a chunk's
    padded size depends on, so chunks can be planned without building layouts."""
    predecessors = predecessors_of(arch)
    nodes = all_nodes(level_sizes(arch))
    shapes: dict[Node | str, tuple[int, int]] = {}
    for node in nodes[1:]:
        fan_in = sum(unit_width(arch, src) for src in predecessors[node])
        if node == nodes[-1]:
            shapes[HEAD] = (fan_in, output_units)
        else:
            shapes[node] = (fan_in, unit_width(arch, node))
    return shapes


class PaddedSize:
    """The padded parameter count of a growing chunk, kept up to date one candidate at a time
    (the same figure as ``make_plan(...).padded_params()``)."""

    def __init__(self):
        self.positions: dict[Node | str, list[int]] = {}  # position -> [members, widest fan-in, widest width]

    def total(self, extra: dict | None = None) -> int:
        total = 0
        for position in set(self.positions) | set(extra or {}):
            members, fan_in, width = self.positions.get(position, (0, 0, 0))
            if extra and position in extra:
                members, fan_in, width = members + 1, max(fan_in, extra[position][0]), max(width, extra[position][1])
            total += members * (fan_in + 1) * width
        return total

    def add(self, shapes: dict) -> None:
        for position, (fan_in, width) in shapes.items():
            entry = self.positions.setdefault(position, [0, 0, 0])
            entry[0] += 1
            entry[1], entry[2] = max(entry[1], fan_in), max(entry[2], width)


def fusable(arch: dict) -> bool:
    """Architectures the fused layout can express (concatenating units; the default)."""
    return arch.get("merging", "concatenate") == "concatenate"


def make_plan(architectures: list[dict], output_units: int) -> FusedPlan:
    if not architectures:
        raise ValueError("a fused chunk needs at least one architecture")
    input_dim = int(architectures[0]["input_dim"])
    if any(int(a["input_dim"]) != input_dim for a in architectures):
        raise ValueError("all architectures of a fused chunk must share input_dim")
    positions = sorted({node for arch in architectures for node in all_nodes(level_sizes(arch))[1:-1]})
    first_row: dict[tuple[int, Node], int] = {}  # (candidate, its unit) -> first buffer row of its output

    def reader(tag: str, node: Node | None, units: dict[int, Node], width: int) -> dict:
        """Gather rows of each member (its sorted predecessors' real rows), padded to the widest."""
        members = np.array(sorted(units), dtype=np.int64)
        lists = []
        for index in members:
            arch, rows = architectures[index], []
            for src in predecessors_of(arch)[units[index]]:
                start = FIRST_INPUT_ROW if src == INPUT else first_row[(int(index), src)]
                rows.extend(range(start, start + unit_width(arch, src)))
            lists.append(rows)
        fan_ins = np.array([len(r) for r in lists], dtype=np.int64)
        widest = int(fan_ins.max())
        padded = np.full((len(members), widest + 1), ZERO_ROW, dtype=np.int64)
        for position, rows in enumerate(lists):
            padded[position, :len(rows)] = rows
        padded[:, widest] = ONES_ROW
        return dict(tag=tag, node=node, members=members, fan_in=widest, width=width, rows=padded,
                    fan_ins=fan_ins)

    slots, next_row = [], FIRST_INPUT_ROW + input_dim
    for node in positions:
        units = {index: node for index, arch in enumerate(architectures) if _has(arch, node)}
        specs = [unit_spec(architectures[index], node) for index in sorted(units)]
        width = max(int(spec["neurons"]) for spec in specs)
        activations = tuple(sorted({spec["activation"] for spec in specs}))
        slot = Slot(
            **reader(f"unit_{node[0]}_{node[1]}", node, units, width), block_start=next_row,
            widths=np.array([spec["neurons"] for spec in specs], dtype=np.int64),
            activations=activations,
            activation_index=np.array([activations.index(spec["activation"]) for spec in specs], dtype=np.int64),
            batchnorm=np.array([1.0 if spec.get("batchnorm") else 0.0 for spec in specs], np.float32),
            dropout=np.array([unit_dropout(architectures[index], node) for index in sorted(units)], np.float32),
        )
        for position, index in enumerate(slot.members):
            first_row[(int(index), node)] = next_row + position * width
        next_row += len(slot.members) * width
        slots.append(slot)
    outputs = {index: all_nodes(level_sizes(arch))[-1] for index, arch in enumerate(architectures)}
    head = Reader(**reader(HEAD, None, outputs, output_units),
                  widths=np.full(len(architectures), output_units, dtype=np.int64))
    return FusedPlan(architectures, input_dim, output_units, slots, head)


def _has(arch: dict, node: Node) -> bool:
    level, unit = node
    return level < len(arch["levels"]) - 1 and unit < len(arch["levels"][level]["units"])


# --------------------------------------------------------------------------- weights both ways


def variable_shapes(plan: FusedPlan) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every batched array (leading axis: the reader's members), in a fixed order."""
    shapes: dict[str, tuple[int, ...]] = {}
    for reader in plan.readers():
        shapes[f"{reader.tag}/kernel"] = (len(reader.members), reader.width, reader.fan_in + 1)
        if isinstance(reader, Slot) and reader.any_batchnorm:
            for part in BATCHNORM_PARTS:
                shapes[f"{reader.tag}/{part}"] = (len(reader.members), reader.width)
    return shapes


def trainable(name: str) -> bool:
    return not name.endswith(("moving_mean", "moving_variance"))


def array_owner(plan: FusedPlan) -> dict[str, Reader]:
    """Array name -> the reader whose members index its leading axis."""
    return {name: next(r for r in plan.readers() if name.startswith(r.tag + "/")) for name in variable_shapes(plan)}


def _unit_readers(plan: FusedPlan, index: int) -> list[tuple[Node, Reader, str]]:
    """Candidate ``index``'s units, each with the reader that lists it, and its standalone layer name."""
    arch = plan.architectures[index]
    nodes = all_nodes(level_sizes(arch))
    by_node = {slot.node: slot for slot in plan.slots}
    return [(node, plan.head if node == nodes[-1] else by_node[node], dense_name(node, nodes[-1]))
            for node in nodes[1:]]


def _normalizes(plan: FusedPlan, index: int, node: Node, reader: Reader) -> bool:
    return reader is not plan.head and bool(unit_spec(plan.architectures[index], node).get("batchnorm"))


def to_fused(plan: FusedPlan, per_candidate: list[Weights], *, identity: bool = True) -> dict[str, np.ndarray]:
    """Batched arrays holding each candidate's standalone weights in its slice (zeros elsewhere).

    ``identity`` starts unused batch-norm scales at 1 (weights); optimizer slots pass False.
    """
    arrays = {name: np.zeros(shape, np.float32) for name, shape in variable_shapes(plan).items()}
    for name in arrays:
        if identity and name.endswith(("/gamma", "/moving_variance")):
            arrays[name][:] = 1.0
    for index, weights in enumerate(per_candidate):
        for node, reader, layer in _unit_readers(plan, index):
            kernel, bias = weights[layer]
            fan_in, width = kernel.shape
            position = reader.position(index)
            target = arrays[f"{reader.tag}/kernel"][position]
            target[:width, :fan_in] = kernel.T
            target[:width, reader.fan_in] = bias
            if _normalizes(plan, index, node, reader):
                for part, values in zip(BATCHNORM_PARTS, weights[batchnorm_name(node)]):
                    arrays[f"{reader.tag}/{part}"][position, :width] = values
    return arrays


def from_fused(plan: FusedPlan, arrays: dict[str, np.ndarray], index: int, *, sliced: bool = False) -> Weights:
    """Candidate ``index``'s standalone weights (build.py layer names) out of the batched arrays.

    With ``sliced``, ``arrays`` holds that candidate's slices already (``candidate_slices``).
    """
    weights: Weights = {}
    for node, reader, layer in _unit_readers(plan, index):
        position = reader.position(index)

        def part(name: str) -> np.ndarray:
            return arrays[name] if sliced else arrays[name][position]

        fan_in, width = int(reader.fan_ins[position]), int(reader.widths[position])
        kernel = part(f"{reader.tag}/kernel")
        weights[layer] = [np.ascontiguousarray(kernel[:width, :fan_in].T), kernel[:width, reader.fan_in].copy()]
        if _normalizes(plan, index, node, reader):
            weights[batchnorm_name(node)] = [part(f"{reader.tag}/{name}")[:width].copy() for name in BATCHNORM_PARTS]
    return weights


def candidate_slices(plan: FusedPlan, arrays: dict[str, np.ndarray], index: int) -> dict[str, np.ndarray]:
    """Candidate ``index``'s slice of every array it has a unit in (copied: training goes on)."""
    slices = {}
    for name, reader in array_owner(plan).items():
        position = reader.position(index)
        if position is not None:
            slices[name] = arrays[name][position].copy()
    return slices
