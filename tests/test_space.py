"""The architecture space: sampler invariants, checker, and evolution operators keep them."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest

from cerebros_service.settings import SpaceSettings
from cerebros_service.search.space import (
    ArchitectureSampler, architecture_summary, check_architecture, repair_architecture, sample_architecture,
)
from cerebros_service.strategies.evolution import crossover, mutate

SPACES = {
    "default": SpaceSettings(),
    "wide": SpaceSettings(min_levels=2, max_levels=5, min_units_per_level=1, max_units_per_level=5,
                          activations=("elu", "relu", "tanh"), max_skip_depth=4,
                          lateral_probability=0.9, max_laterals_per_level=3),
    "choices": SpaceSettings(min_levels=1, max_levels=1, min_units_per_level=1, max_units_per_level=1,
                             neuron_choices=(16, 32)),
    "rates": SpaceSettings(learning_rates=(0.001, 0.002, 0.005, 0.01)),
}


def independent_check(arch: dict, space: SpaceSettings, output_units: int) -> None:
    """Re-derive the invariants without using space.py's checker."""
    levels = arch["levels"]
    assert space.min_levels <= len(levels) - 1 <= space.max_levels
    assert levels[-1]["units"] == [{"neurons": output_units, "activation": "output"}]
    if space.learning_rates:
        assert arch["learning_rate"] in space.learning_rates
    else:
        assert "learning_rate" not in arch
    nodes = [(-1, 0)] + [(lv, u) for lv, level in enumerate(levels) for u in range(len(level["units"]))]
    for lv, level in enumerate(levels[:-1]):
        assert space.min_units_per_level <= len(level["units"]) <= space.max_units_per_level
        for unit in level["units"]:
            if space.neuron_choices:
                assert unit["neurons"] in space.neuron_choices
            else:
                assert space.min_neurons <= unit["neurons"] <= space.max_neurons
            assert unit["activation"] in space.activations
    succ = {n: set() for n in nodes}
    pred = {n: set() for n in nodes}
    for (s, d) in arch["edges"]:
        s, d = tuple(s), tuple(d)
        assert s in succ and d in succ and s[0] < d[0], (s, d)
        succ[s].add(d)
        pred[d].add(s)
    per_level: dict[int, int] = {}
    for (s, d) in arch["laterals"]:
        s, d = tuple(s), tuple(d)
        assert s[0] == d[0] and s[1] < d[1] and 0 <= s[0] < len(levels) - 1, (s, d)
        per_level[s[0]] = per_level.get(s[0], 0) + 1
        succ[s].add(d)
        pred[d].add(s)
    assert all(count <= space.max_laterals_per_level for count in per_level.values())
    assert all(pred[n] for n in nodes[1:]), "a unit without predecessor"

    def closure(start, graph):
        seen, todo = {start}, [start]
        while todo:
            for nxt in graph[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    assert closure((-1, 0), succ) == set(nodes), "a unit unreachable from the input"
    assert closure(nodes[-1], pred) == set(nodes), "a unit that does not reach the output"


@pytest.mark.parametrize("name", sorted(SPACES))
def test_sampled_architectures_keep_every_invariant(name):
    space = SPACES[name]
    rng = np.random.default_rng(123)
    for _ in range(300):
        arch = sample_architecture(space, input_dim=7, output_units=3, rng=rng)
        check_architecture(arch, space)
        independent_check(arch, space, output_units=3)
        assert arch["input_dim"] == 7
        assert json.loads(json.dumps(arch)) == arch  # plain JSON data


def test_same_seed_same_architectures_and_different_seeds_differ():
    space = SPACES["wide"]

    def draw(seed):
        rng = np.random.default_rng(seed)
        return [sample_architecture(space, 5, 1, rng) for _ in range(5)]

    assert draw(7) == draw(7)
    assert draw(7) != draw(8)


def test_skip_connections_respect_the_depth_range():
    # With affinity 0 a unit only gets the nearest-level fallback predecessor, so every
    # edge longer than one level is an orphan's skip connection.
    for low, high in ((1, 1), (2, 2), (2, 3)):
        space = SpaceSettings(min_levels=4, max_levels=4, min_units_per_level=2, max_units_per_level=3,
                              wiring="poisson", predecessor_affinity=0.0, min_skip_depth=low,
                              max_skip_depth=high)
        rng = np.random.default_rng(0)
        depths = set()
        for _ in range(100):
            arch = sample_architecture(space, 4, 1, rng)
            check_architecture(arch, space)
            output_level = len(arch["levels"]) - 1
            for s, d in arch["edges"]:
                depth = d[0] - s[0]
                if depth > 1:
                    depths.add(depth)
                    assert low <= depth <= high or d[0] == output_level, (s, d)
        if high >= 2:
            assert depths, "no skip connection was ever drawn"
        else:
            assert not depths


def test_laterals_follow_probability_and_cap():
    none = SpaceSettings(min_units_per_level=3, max_units_per_level=4, lateral_probability=0.0)
    every = SpaceSettings(min_units_per_level=3, max_units_per_level=4, lateral_probability=1.0,
                          lateral_decay=1.0, max_laterals_per_level=2)
    rng = np.random.default_rng(1)
    for _ in range(50):
        assert sample_architecture(none, 3, 1, rng)["laterals"] == []
        arch = sample_architecture(every, 3, 1, rng)
        per_level = [sum(1 for s, _ in arch["laterals"] if s[0] == lv) for lv in range(len(arch["levels"]) - 1)]
        assert per_level == [2] * (len(arch["levels"]) - 1)


def test_summary_lists_units_and_neurons_per_level():
    arch = sample_architecture(SPACES["wide"], 5, 4, np.random.default_rng(3))
    summary = architecture_summary(arch)
    assert summary["levels"] == [len(level["units"]) for level in arch["levels"]]
    assert summary["neurons"][-1] == [4]
    assert [len(n) for n in summary["neurons"]] == summary["levels"]


def _valid():
    return sample_architecture(SPACES["wide"], 5, 2, np.random.default_rng(11))


@pytest.mark.parametrize("breakage, message", [
    (lambda a: a["edges"].append([[len(a["levels"]) - 1, 0], [0, 0]]), "later level"),
    (lambda a: a["laterals"].append([[0, 0], [0, 0]]), "lateral"),
    (lambda a: a.update(edges=[e for e in a["edges"] if e[1] != [0, 0]],
                        laterals=[e for e in a["laterals"] if e[1] != [0, 0]]), "no predecessor"),
    (lambda a: a.update(edges=[e for e in a["edges"] if e[0] != [0, 0]],
                        laterals=[e for e in a["laterals"] if e[0] != [0, 0]]), "does not reach the output"),
    (lambda a: a["levels"][0]["units"][0].update(neurons=0), "positive int"),
    (lambda a: a["levels"][0]["units"][0].update(activation="sparkle"), "unknown activation"),
    (lambda a: a["levels"][-1]["units"].append({"neurons": 2, "activation": "output"}), "exactly one unit"),
    (lambda a: a["edges"].append([[0, 99], [1, 0]]), "does not exist"),
    (lambda a: a["edges"].append(copy.deepcopy(a["edges"][0])), "repeats"),
    (lambda a: a.update(dropout=1.5), "dropout"),
    (lambda a: a.update(learning_rate=0.0), "learning_rate"),
    (lambda a: a.update(learning_rate="fast"), "learning_rate"),
    (lambda a: a.update(learning_rate=float("nan")), "learning_rate"),
])
def test_checker_rejects_broken_architectures(breakage, message):
    arch = _valid()
    check_architecture(arch)
    breakage(arch)
    with pytest.raises(ValueError, match=message):
        check_architecture(arch)


def test_checker_with_space_rejects_out_of_range_values():
    arch = _valid()
    arch["levels"][0]["units"][0]["neurons"] = 10_000
    check_architecture(arch)  # structurally fine
    with pytest.raises(ValueError, match="neurons"):
        check_architecture(arch, SPACES["wide"])


def test_repair_makes_a_stripped_architecture_valid():
    arch = _valid()
    arch["edges"], arch["laterals"] = [], []
    repaired = repair_architecture(arch, SPACES["wide"], np.random.default_rng(0))
    check_architecture(repaired, SPACES["wide"])
    independent_check(repaired, SPACES["wide"], output_units=2)


@pytest.mark.parametrize("name", sorted(SPACES))
def test_mutation_and_crossover_children_are_valid(name):
    space = SPACES[name]
    rng = np.random.default_rng(5)
    for _ in range(150):
        a = sample_architecture(space, 6, 2, rng)
        b = sample_architecture(space, 6, 2, rng)
        for rate in (0.0, 0.5, 1.0):
            child = mutate(a, space, rate, rng, force=True)
            independent_check(child, space, output_units=2)
            assert child != a, "a forced mutation changed nothing"
        child = crossover(a, b, space, rng)
        independent_check(child, space, output_units=2)


def test_operators_do_not_modify_their_parents():
    space = SPACES["wide"]
    rng = np.random.default_rng(9)
    a, b = sample_architecture(space, 6, 2, rng), sample_architecture(space, 6, 2, rng)
    a_before, b_before = copy.deepcopy(a), copy.deepcopy(b)
    for _ in range(20):
        mutate(a, space, 1.0, rng, force=True)
        crossover(a, b, space, rng)
    assert a == a_before and b == b_before


# --------------------------------------------------------------------------- Cerebros wiring

def _predecessors(arch):
    found: dict[tuple, set] = {}
    for src, dst in arch["edges"]:
        found.setdefault(tuple(dst), set()).add(tuple(src))
    return found


def test_under_default_affinities_every_unit_above_level_0_reads_every_earlier_level():
    space = SpaceSettings(min_levels=1, max_levels=5, max_units_per_level=4)
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(300):
        arch = sample_architecture(space, 6, 2, rng)
        check_architecture(arch, space)
        predecessors = _predecessors(arch)
        for level, spec in enumerate(arch["levels"][1:], start=1):
            for unit in range(len(spec["units"])):
                levels_read = {src[0] for src in predecessors[(level, unit)]}
                assert levels_read >= set(range(-1, level)), (level, unit, levels_read)
                checked += 1
    assert checked > 500


def test_predecessor_counts_follow_ceil_affinity_times_width_times_decay():
    # Drawn with replacement, so the distinct units read from a level of n are at most
    # ceil(0.7 * 0.7**distance * n); the output unit draws 2 * n more from the last hidden level.
    space = SpaceSettings(min_levels=3, max_levels=3, min_units_per_level=4, max_units_per_level=4,
                          lateral_probability=0.0)
    rng = np.random.default_rng(1)
    output_reads = []
    for _ in range(200):
        arch = sample_architecture(space, 6, 1, rng)
        predecessors = _predecessors(arch)
        output = len(arch["levels"]) - 1
        for (level, unit), sources in predecessors.items():
            for source_level in range(-1, level):
                width = 1 if source_level == -1 else 4
                distance = level - source_level
                drawn = math.ceil(0.7 * 0.7 ** distance * width)
                if level == output and distance == 1:
                    drawn += 2 * width
                read = sum(1 for src in sources if src[0] == source_level)
                assert 1 <= read <= min(width, drawn) or (read > drawn and source_level >= 0), \
                    (level, unit, source_level, read)  # more only through an orphan's skip
        output_reads.append(sum(1 for src in predecessors[(output, 0)] if src[0] == output - 1) / 4)
    # ceil(0.49 * 4) + 8 = 10 draws from 4 units: each missed with probability 0.75**10 (6%)
    assert 0.88 < np.mean(output_reads) <= 1.0


def test_laterals_fire_with_probability_097_and_stop_after_max_consecutive():
    space = SpaceSettings(min_levels=1, max_levels=1, min_units_per_level=2, max_units_per_level=2)
    rng = np.random.default_rng(2)
    hits = sum(bool(sample_architecture(space, 3, 1, rng)["laterals"]) for _ in range(2000))
    assert abs(hits / 2000 - 0.97 * 0.95) < 0.03  # the one possible lateral, distance 1
    certain = SpaceSettings(min_levels=1, max_levels=1, min_units_per_level=6, max_units_per_level=6,
                            lateral_probability=1.0, lateral_decay=1.0, max_consecutive_laterals=2,
                            max_laterals_per_level=64)
    arch = sample_architecture(certain, 3, 1, np.random.default_rng(3))
    into_five = sorted(src[1] for src, dst in arch["laterals"] if dst == [0, 5])
    # unit 5 tries 4, 3 (two in a row), then 2 must fail, then 1, 0 again
    assert into_five == [0, 1, 3, 4]


@pytest.mark.parametrize("wiring", ["cerebros", "poisson"])
@pytest.mark.parametrize("max_skip", [1, 2, 3])
def test_max_skip_depth_bounds_every_span(wiring, max_skip):
    space = SpaceSettings(min_levels=5, max_levels=5, min_units_per_level=1, max_units_per_level=3,
                          wiring=wiring, max_skip_depth=max_skip, predecessor_affinity=3.0)
    rng = np.random.default_rng(4)
    spans = set()
    for _ in range(100):
        arch = sample_architecture(space, 4, 1, rng)
        check_architecture(arch, space)
        spans |= {dst[0] - src[0] for src, dst in arch["edges"]}
        child = mutate(arch, space, 0.5, rng, force=True)  # evolution keeps the bound
        assert max(dst[0] - src[0] for src, dst in child["edges"]) <= max_skip
    assert max(spans) == max_skip  # reached, never passed
    arch["edges"].append([[-1, 0], [len(arch["levels"]) - 1, 0]])  # input -> output: span 6
    with pytest.raises(ValueError, match="max_skip_depth"):
        check_architecture(arch, space)


def test_moieties_rewire_the_same_levels_and_units():
    space = SpaceSettings(min_levels=2, max_levels=4, max_units_per_level=4, tries_per_moiety=3)
    sampler = ArchitectureSampler(space, 5, 2, np.random.default_rng(5))
    drawn = [sampler.draw() for _ in range(9)]
    for group in (drawn[0:3], drawn[3:6], drawn[6:9]):
        assert all(arch["levels"] == group[0]["levels"] for arch in group)
        assert len({json.dumps(arch["edges"]) + json.dumps(arch["laterals"]) for arch in group}) > 1
    assert drawn[0]["levels"] != drawn[3]["levels"] or drawn[3]["levels"] != drawn[6]["levels"]


@pytest.mark.parametrize("choice, key, value", [("bnorm", "batchnorm", True), ("dropout", "dropout", 0.25),
                                                ("none", None, None)])
def test_bnorm_or_dropout_marks_every_hidden_unit(choice, key, value):
    space = SpaceSettings(bnorm_or_dropout=choice, dropout_rate=0.25)
    arch = sample_architecture(space, 4, 2, np.random.default_rng(6))
    for level in arch["levels"][:-1]:
        for unit in level["units"]:
            extra = set(unit) - {"neurons", "activation"}
            assert extra == (set() if key is None else {key}) and unit.get(key) == value
    assert set(arch["levels"][-1]["units"][0]) == {"neurons", "activation"}


def test_add_merging_builds_a_model_of_padded_sums_that_only_the_sequential_trainer_takes(tmp_path):
    import keras

    from cerebros_service.search.build import build_model, count_params, initial_weights
    from cerebros_service.search.fused_plan import fusable

    space = SpaceSettings(min_levels=2, max_levels=2, min_units_per_level=2, max_units_per_level=2,
                          min_neurons=3, max_neurons=9, merging_strategy="add")
    arch = sample_architecture(space, 4, 3, np.random.default_rng(7))
    assert arch["merging"] == "add" and not fusable(arch)
    model = build_model(arch, "multiclass", 3, feature_mean=np.zeros(4), feature_var=np.ones(4),
                        weights=initial_weights(arch, 3, seed=0))
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == count_params(arch, 3)
    assert any(isinstance(layer, keras.layers.Add) for layer in model.layers)
    x = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    path = str(tmp_path / "add.keras")
    model.optimizer.build(model.trainable_variables)  # as save_model does: the file then loads without warnings
    model.save(path)
    assert np.allclose(keras.saving.load_model(path).predict_on_batch(x), model.predict_on_batch(x), atol=1e-6)


def test_a_searched_learning_rate_is_drawn_from_the_choices_and_mutates_to_a_neighbour():
    space = SPACES["rates"]
    rng = np.random.default_rng(3)
    drawn = [sample_architecture(space, 6, 2, rng)["learning_rate"] for _ in range(200)]
    assert set(drawn) == set(space.learning_rates)
    choices = sorted(space.learning_rates)
    steps = set()
    for _ in range(300):
        parent = sample_architecture(space, 6, 2, rng)
        child = mutate(parent, space, 1.0, rng)
        before, after = choices.index(parent["learning_rate"]), choices.index(child["learning_rate"])
        steps.add(after - before)
    assert steps == {-1, 0, 1}  # a neighbouring rate, or (at an end of the choices) the same


def test_without_searched_rates_architectures_and_mutations_are_as_before():
    """No learning_rate key, and the same random stream as a space that never had the field."""
    plain, rated_off = SpaceSettings(), SpaceSettings(learning_rates=None)
    a = sample_architecture(plain, 6, 2, np.random.default_rng(1))
    b = sample_architecture(rated_off, 6, 2, np.random.default_rng(1))
    assert a == b and "learning_rate" not in a
    assert mutate(a, plain, 0.5, np.random.default_rng(2)) == mutate(b, rated_off, 0.5, np.random.default_rng(2))
