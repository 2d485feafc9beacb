"""How K architectures share one padded superset: the layout of a fused chunk, in numpy.

The fused trainer (fused.py) trains K candidates as ONE set of batched weights.
Every hidden unit position ``(level, unit)`` that any candidate uses becomes a
*slot*, as wide as the widest unit there; slots run in (level, unit) order, a
topological order for every candidate. Only the candidates that have a unit at a
position (its *members*) compute there, so a deep or wide unit that few
candidates have costs only them.

Each slot's output is a *block* ``(members, width, batch)``. A unit position reads
every source (the input or an earlier slot) that any of its members reads through
a *link*, which holds only the members that read that source (its *readers*): one
kernel ``(readers, width, source width)`` applied with one batched matmul to the
source's block, whose members are first *picked* in the readers' order. The
reader's output is the sum over its links plus a bias, a link that only some
members read added into their rows (one segment sum over all such links). That is
exactly a concatenating Dense: its kernel, cut row-wise by predecessor, is the
links' kernels, transposed. Holding the readers only, not every member, cut a
40-candidate digits chunk's kernels from 2.77 M to 1.79 M parameters. Gathering
whole member blocks (not single rows) keeps the backward pass a few large additions; a block's rows beyond a member's real
width are zeroed, so padding trains nothing and changes no candidate. Moving
weights between a candidate's standalone layout (build.py's layer names, Keras
order) and its slice of the batched arrays is a copy of corners, both ways: a
fused candidate is saved as an ordinary Keras model, and a standalone one (from
an earlier rung, say) can continue fused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .build import Weights, batchnorm_name, dense_name, unit_dropout, unit_spec, unit_width
from .space import INPUT, Node, all_nodes, level_sizes, predecessors_of

HEAD = "head"
INPUT_TAG = "input"
BATCHNORM_PARTS = ("gamma", "beta", "moving_mean", "moving_variance")


@dataclass
class Link:
    """What one unit position reads from one source (the input or an earlier slot)."""

    source: str  # INPUT_TAG or the source slot's tag
    width: int  # rows of the source's block per member
    # (n,) the positions, among the reader's members, of those that read this source,
    # ascending; None: every member does
    readers: np.ndarray | None
    # (n,) the source member each reader reads; None: the source's members are the readers, in order
    picks: np.ndarray | None

    def kernel_name(self, reader_tag: str) -> str:
        return f"{reader_tag}/from_{self.source}"

    def count(self, members: int) -> int:
        return members if self.readers is None else len(self.readers)

    def row(self, position: int) -> int:
        """The kernel row of the member at ``position`` (which reads this source)."""
        return position if self.readers is None else int(np.searchsorted(self.readers, position))


@dataclass
class Reader:
    """One unit position: its members, what each reads, its kernels' shapes."""

    tag: str  # array name prefix
    node: Node | None  # the slot's (level, unit); None for the head
    members: np.ndarray  # (M,) candidate indices that have a unit here, ascending
    width: int  # output rows per member
    widths: np.ndarray  # (M,) each member's real width
    links: list[Link]
    # per member, its predecessors in build.py's concatenation order: (link index, real rows)
    inputs: list[list[tuple[int, int]]] = field(default_factory=list)

    def position(self, candidate: int) -> int | None:
        """Where ``candidate`` sits among the members (None: it has no unit here)."""
        found = np.flatnonzero(self.members == candidate)
        return int(found[0]) if len(found) else None

    @property
    def ragged(self) -> bool:
        """Some member is narrower than the slot (its extra rows must read as zeros)."""
        return bool((self.widths < self.width).any())

    @property
    def partial_links(self) -> list[int]:
        """The links that only some members read."""
        return [number for number, link in enumerate(self.links) if link.readers is not None]

    def padded_params(self) -> int:
        members = len(self.members)
        return self.width * (members + sum(link.count(members) * link.width for link in self.links))


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
        return sum(r.padded_params() for r in self.readers())


def unit_shapes(arch: dict, output_units: int) -> dict[Node | str, tuple[frozenset, int]]:
    """Each unit's (source positions, width) by position (``HEAD`` for the output unit), the
    input's width under ``INPUT``: all a chunk's padded size depends on, so chunks can be
    planned without building layouts."""
    predecessors = predecessors_of(arch)
    nodes = all_nodes(level_sizes(arch))
    shapes: dict[Node | str, tuple[frozenset, int]] = {INPUT: (frozenset(), unit_width(arch, INPUT))}
    for node in nodes[1:]:
        sources = frozenset(predecessors[node])
        if node == nodes[-1]:
            shapes[HEAD] = (sources, output_units)
        else:
            shapes[node] = (sources, unit_width(arch, node))
    return shapes


class PaddedSize:
    """The padded parameter count of a growing chunk, kept up to date one candidate at a time
    (the same figure as ``make_plan(...).padded_params()``)."""

    def __init__(self):
        self.members: dict[Node | str, int] = {}
        self.widths: dict[Node | str, int] = {}
        self.readers: dict[Node | str, dict[Node, int]] = {}  # position -> source -> members reading it

    def total(self, extra: dict | None = None) -> int:
        members, widths = dict(self.members), dict(self.widths)
        readers = {position: dict(counts) for position, counts in self.readers.items()}
        if extra:
            _merge(members, widths, readers, extra)
        return sum(widths[position] * (count + sum(n * widths[s] for s, n in readers[position].items()))
                   for position, count in members.items() if position != INPUT)

    def add(self, shapes: dict) -> None:
        _merge(self.members, self.widths, self.readers, shapes)


def _merge(members: dict, widths: dict, readers: dict, shapes: dict) -> None:
    for position, (reads, width) in shapes.items():
        members[position] = members.get(position, 0) + 1
        widths[position] = max(widths.get(position, 0), width)
        counts = readers.setdefault(position, {})
        for source in reads:
            counts[source] = counts.get(source, 0) + 1


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
    by_node: dict[Node, Slot] = {}

    def reader(tag: str, node: Node | None, units: dict[int, Node]) -> dict:
        """Links to every source any member reads, in source order (the input, then slots)."""
        members = np.array(sorted(units), dtype=np.int64)
        reads = [predecessors_of(architectures[index])[units[index]] for index in members]
        sources = sorted({src for srcs in reads for src in srcs})
        links = []
        for src in sources:
            readers = np.array([p for p, srcs in enumerate(reads) if src in srcs], dtype=np.int64)
            every = len(readers) == len(members)
            if src == INPUT:
                links.append(Link(INPUT_TAG, input_dim, None if every else readers, None))
                continue
            slot = by_node[src]
            picks = np.array([slot.position(int(members[p])) for p in readers], dtype=np.int64)
            same = len(picks) == len(slot.members) and (picks == np.arange(len(picks))).all()
            links.append(Link(slot.tag, slot.width, None if every else readers, None if same else picks))
        link_of = {src: number for number, src in enumerate(sources)}
        inputs = [[(link_of[src], unit_width(architectures[index], src)) for src in srcs]
                  for index, srcs in zip(members, reads)]
        return dict(tag=tag, node=node, members=members, links=links, inputs=inputs)

    slots = []
    for node in positions:
        units = {index: node for index, arch in enumerate(architectures) if _has(arch, node)}
        specs = [unit_spec(architectures[index], node) for index in sorted(units)]
        widths = np.array([spec["neurons"] for spec in specs], dtype=np.int64)
        activations = tuple(sorted({spec["activation"] for spec in specs}))
        slot = Slot(
            **reader(f"unit_{node[0]}_{node[1]}", node, units), width=int(widths.max()), widths=widths,
            activations=activations,
            activation_index=np.array([activations.index(spec["activation"]) for spec in specs], dtype=np.int64),
            batchnorm=np.array([1.0 if spec.get("batchnorm") else 0.0 for spec in specs], np.float32),
            dropout=np.array([unit_dropout(architectures[index], node) for index in sorted(units)], np.float32),
        )
        by_node[node] = slot
        slots.append(slot)
    outputs = {index: all_nodes(level_sizes(arch))[-1] for index, arch in enumerate(architectures)}
    head = Reader(**reader(HEAD, None, outputs), width=output_units,
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
        count = len(reader.members)
        for link in reader.links:
            shapes[link.kernel_name(reader.tag)] = (link.count(count), reader.width, link.width)
        shapes[f"{reader.tag}/bias"] = (count, reader.width)
        if isinstance(reader, Slot) and reader.any_batchnorm:
            for part in BATCHNORM_PARTS:
                shapes[f"{reader.tag}/{part}"] = (count, reader.width)
    return shapes


def trainable(name: str) -> bool:
    return not name.endswith(("moving_mean", "moving_variance"))


@dataclass(frozen=True)
class Pack:
    """A reader's trainable arrays stored end to end in one flat array (one variable in the model)."""

    tag: str
    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @property
    def sizes(self) -> list[int]:
        return [int(np.prod(shape)) for shape in self.shapes]

    @property
    def size(self) -> int:
        return sum(self.sizes)

    @property
    def cuts(self) -> list[int]:
        """Where the flat array is split into its arrays."""
        return np.cumsum(self.sizes)[:-1].tolist()

    def pack(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        return np.concatenate([np.asarray(arrays[name], np.float32).reshape(-1) for name in self.names])

    def unpack(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        pieces = np.split(np.asarray(flat), self.cuts)
        return {name: piece.reshape(shape) for name, piece, shape in zip(self.names, pieces, self.shapes)}


def packs(plan: FusedPlan) -> list[Pack]:
    """One pack per reader, over its trainable arrays in ``variable_shapes`` order."""
    shapes = variable_shapes(plan)
    out = []
    for reader in plan.readers():
        names = tuple(name for name in shapes if name.startswith(f"{reader.tag}/") and trainable(name))
        out.append(Pack(reader.tag, names, tuple(shapes[name] for name in names)))
    return out


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
            width = kernel.shape[1]
            position = reader.position(index)
            row = 0
            for link_index, rows in reader.inputs[position]:
                link = reader.links[link_index]
                arrays[link.kernel_name(reader.tag)][link.row(position), :width, :rows] = kernel[row:row + rows].T
                row += rows
            arrays[f"{reader.tag}/bias"][position, :width] = bias
            if _normalizes(plan, index, node, reader):
                for part, values in zip(BATCHNORM_PARTS, weights[batchnorm_name(node)]):
                    arrays[f"{reader.tag}/{part}"][position, :width] = values
    return arrays


def from_fused(plan: FusedPlan, arrays: dict[str, np.ndarray], index: int) -> Weights:
    """Candidate ``index``'s standalone weights (build.py layer names) out of the batched arrays."""
    weights: Weights = {}
    for node, reader, layer in _unit_readers(plan, index):
        position = reader.position(index)
        width = int(reader.widths[position])
        links = [(reader.links[link_index], rows) for link_index, rows in reader.inputs[position]]
        pieces = [arrays[link.kernel_name(reader.tag)][link.row(position), :width, :rows].T for link, rows in links]
        weights[layer] = [np.ascontiguousarray(np.concatenate(pieces, axis=0)),
                          arrays[f"{reader.tag}/bias"][position, :width].copy()]
        if _normalizes(plan, index, node, reader):
            weights[batchnorm_name(node)] = [arrays[f"{reader.tag}/{name}"][position, :width].copy()
                                             for name in BATCHNORM_PARTS]
    return weights
