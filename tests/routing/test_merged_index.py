"""The selector's merged prefix index agrees with each upstream's own table."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from routing.prices import PriceTable
from routing.quality import QualityBook
from routing.rules import Rules
from routing.selector import ExclusionReason, Selector, SelectorSettings, Upstream, _Index

# A small alphabet and short prefixes, so that upstreams' prefixes nest and
# overlap (the cases a merged index can get wrong), next to calling codes.
prefixes = st.text(alphabet="1347", min_size=1, max_size=6)
prices = st.floats(min_value=0, max_value=1, allow_nan=False, allow_infinity=False)
tables = st.builds(
    PriceTable,
    st.dictionaries(prefixes, prices, max_size=25),
    st.none() | prices,
)
numbers = st.text(alphabet="13470", min_size=1, max_size=15)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(tables, min_size=1, max_size=6),
    st.lists(numbers, min_size=1, max_size=10),
    st.sampled_from([0, 7, 40, 10**9]),
)
def test_merged_index_price_is_each_tables_price(
    tables: list[PriceTable], destinations: list[str], budget: int
) -> None:
    upstreams = [Upstream(f"u{n}", table) for n, table in enumerate(tables)]
    index = _Index(upstreams, QualityBook(), base_budget=budget)
    for number in destinations:
        assert index.prices(number) == [table.price_for(number) for table in tables]


rules = st.builds(
    Rules,
    st.frozensets(prefixes, max_size=2),
    st.frozensets(prefixes, max_size=2),
    st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(tables, rules), min_size=1, max_size=5),
    st.lists(numbers, min_size=1, max_size=8),
    st.sampled_from([1, 4096]),
)
def test_selection_serves_by_table_and_rules(
    routes: list[tuple[PriceTable, Rules]], destinations: list[str], cache_size: int
) -> None:
    upstreams = [Upstream(f"u{n}", table, rule) for n, (table, rule) in enumerate(routes)]
    selector = Selector(upstreams, settings=SelectorSettings(cache_size=cache_size))
    for upstream in upstreams:
        selector.health(upstream.name).set_sessions(1, 10)
    for number in destinations * 2:  # the second pass hits the cache
        selection = selector.ranking("+" + number, now=0.0)
        served = {c.route: c.price for c in selection.candidates}
        excluded = {e.route: (e.reason, e.price) for e in selection.excluded}
        assert served.keys().isdisjoint(excluded)
        assert [e.route for e in selection.excluded] == sorted(excluded, key=lambda r: int(r[1:]))
        for upstream in upstreams:
            price = upstream.prices.price_for(number)
            breach = upstream.rules.check_destination(number)
            if price is None:
                assert excluded[upstream.name] == (ExclusionReason.NO_PRICE, None)
            elif breach is not None:
                assert excluded[upstream.name] == (ExclusionReason(breach.value), price)
            else:
                assert served[upstream.name] == price
