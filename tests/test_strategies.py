from __future__ import annotations

from collections import Counter

import pytest

from knobscope.errors import RegistryError, SpecError
from knobscope.expressions import Expression
from knobscope.space import Knob, Space, range_values
from knobscope.strategies import describe_selection, get_strategy


@pytest.fixture
def exp5() -> Space:
    return Space(
        (
            Knob("max_crops", range_values(2, 12, 2)),
            Knob("top_k", range_values(4, 32, 4), default=8),
            Knob("num_active_blocks", range_values(8, 16, 2), default=16),
        )
    )


# Seed 000_75db2c1037fb670a.txt, verbatim.
SEED_LISTS = {
    "stratified": ([2, 6, 12], [4, 16, 32], [8, 12, 16]),
    "boundary": ([2, 6, 12], [4, 8, 16, 24, 32], [8, 12, 16]),
    "balanced": ([2, 6, 12], [4, 12, 20, 32], [8, 12, 16]),
    "custom_sparse": ([2, 6, 12], [4, 12, 20, 32], [8, 12, 16]),
    "full": ([2, 4, 6, 8, 10, 12], [4, 8, 12, 16, 20, 24, 28, 32], [8, 10, 12, 14, 16]),
}
SEED_COUNTS = {"full": 240, "stratified": 27, "boundary": 45, "balanced": 36, "custom_sparse": 36, "lhs": 60}


@pytest.mark.parametrize("name", sorted(SEED_LISTS))
def test_exp5_value_lists_match_the_seed(exp5: Space, name: str) -> None:
    strategy = get_strategy(name)
    assert tuple(strategy.value_lists(exp5)) == SEED_LISTS[name]
    configs = strategy.select(exp5)
    assert len(configs) == SEED_COUNTS[name]
    assert len(set(configs)) == len(configs)


def test_exp5_lhs_has_60_distinct_configs_covering_every_value_evenly(exp5: Space) -> None:
    configs = get_strategy("lhs").select(exp5)
    assert len(configs) == SEED_COUNTS["lhs"] == len(set(configs))
    for knob in exp5.knobs:
        counts = Counter(c[knob.name] for c in configs)
        assert set(counts) == set(knob.values), knob.name
        lo, hi = 60 // len(knob.values), -(-60 // len(knob.values))
        assert all(lo <= n <= hi for n in counts.values()), (knob.name, counts)


def test_lhs_and_random_are_reproducible_and_seeded(exp5: Space) -> None:
    assert get_strategy("lhs").select(exp5) == get_strategy("lhs", {"seed": 42}).select(exp5)
    assert get_strategy("lhs").select(exp5) != get_strategy("lhs", {"seed": 7}).select(exp5)
    assert get_strategy("random", {"size": 10}).select(exp5) == get_strategy("random", {"size": 10}).select(exp5)


def test_lhs_respects_constraints_and_keeps_size(exp5: Space) -> None:
    space = Space(exp5.knobs, constraints=(Expression.parse("top_k * num_active_blocks <= 320"),))
    configs = get_strategy("lhs", {"size": 40}).select(space)
    assert len(configs) == 40 == len(set(configs))
    assert all(c["top_k"] * c["num_active_blocks"] <= 320 for c in configs)


def test_constraints_and_derived_quantities_remove_configs_before_running() -> None:
    space = Space(
        (Knob("block_size", (32, 64, 128)), Knob("sketch_dim", (4, 16, 64))),
        constants=(("seq_len", 4096),),
        derived=(("num_blocks", Expression.parse("ceil(seq_len / block_size)")),),
        constraints=(Expression.parse("sketch_dim >= log2(num_blocks)"),),
    )
    configs = get_strategy("full").select(space)
    # num_blocks is 128, 64, 32: log2 is 7, 6, 5, so sketch_dim 4 is always out and 16, 64 always in.
    assert {(c["block_size"], c["sketch_dim"]) for c in configs} == {
        (b, k) for b in (32, 64, 128) for k in (16, 64)
    }
    assert space.variables(configs[0])["num_blocks"] == 4096 // configs[0]["block_size"]


def test_custom_knob_lists_override_the_spec(exp5: Space) -> None:
    space = exp5.with_values({"max_crops": [2, 6, 12], "top_k": [4, 16, 32], "num_active_blocks": [8, 12, 16]})
    # Seed 000 writes "3 x 3 x 3 = 9 combinations" for these lists; the product is 27.
    assert len(get_strategy("full").select(space)) == 27
    assert space.knob("top_k").default == 16  # 8 left the list: default moves to the middle value
    with pytest.raises(SpecError, match="unknown knob 'topk'"):
        exp5.with_values({"topk": [1]})


def test_describe_selection_reports_coverage(exp5: Space) -> None:
    desc = describe_selection(exp5, get_strategy("stratified").select(exp5))
    assert desc["combinations"] == 27
    assert desc["knobs"]["top_k"]["values"] == [4, 16, 32]
    assert desc["knobs"]["top_k"]["covered"] == 3 and desc["knobs"]["top_k"]["of"] == 8


def test_small_knobs_and_bad_options() -> None:
    space = Space((Knob("a", (1,)), Knob("b", (1, 2))))
    for name in ("stratified", "boundary", "balanced", "custom_sparse", "full", "lhs", "random"):
        assert len(get_strategy(name).select(space)) in (1, 2)
    with pytest.raises(RegistryError, match="valid names are: balanced, bayesian, boundary"):
        get_strategy("bayes")
    with pytest.raises(SpecError, match="option 'sizes'"):
        get_strategy("lhs", {"sizes": 3})


def test_listed_runs_exactly_the_given_configurations() -> None:
    from knobscope.errors import SpecError
    from knobscope.expressions import Expression

    space = Space((Knob("a", (1, 2, 3), default=2), Knob("b", (4, 5))), constraints=(Expression.parse("a + b <= 7"),))
    got = get_strategy("listed", {"configs": [{"a": 1, "b": 5}, {"b": 4}, {"a": 1, "b": 5}]}).select(space)
    assert [c.to_dict() for c in got] == [{"a": 1, "b": 5}, {"a": 2, "b": 4}]  # a left out takes its default
    for configs, message in (([{"a": 9, "b": 4}], "not one of"), ([{"z": 1}], "not a knob"), ([{"a": 3, "b": 5}], "breaks the constraint")):
        with pytest.raises(SpecError, match=message):
            get_strategy("listed", {"configs": configs}).select(space)
