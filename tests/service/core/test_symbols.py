import msgspec
import pytest

from service.core.errors import InvalidMessage
from service.core.symbols import SymbolRequest, SymbolSpec, apply_request, price_scale


@pytest.mark.parametrize(
    ("tick", "scale", "minmov"),
    [(0.01, 100, 1), (0.25, 100, 25), (0.00001, 100_000, 1), (1e-8, 100_000_000, 1), (5.0, 1, 5), (0.5, 10, 5)],
)
def test_price_scale_is_the_tick_in_tradingview_terms(tick, scale, minmov):
    assert price_scale(tick) == (scale, minmov)


def test_a_request_adds_with_defaults_updates_what_it_gives_and_relists_a_removed_symbol():
    new = apply_request(SymbolRequest("ABC", tick_size=0.5), None, now_ms=7)
    assert new == SymbolSpec(symbol="ABC", tick_size=0.5, added_ms=7)
    updated = apply_request(SymbolRequest("ABC", description="A b c", price_band_pct=0.0), new, now_ms=9)
    assert updated == SymbolSpec(symbol="ABC", description="A b c", tick_size=0.5, price_band_pct=0.0, added_ms=7)
    back_to_default = apply_request(SymbolRequest("ABC", price_band_pct=None), updated, now_ms=9)
    assert back_to_default.price_band_pct is None
    removed = msgspec.structs.replace(updated, removed_ms=8)
    again = apply_request(SymbolRequest("ABC"), removed, now_ms=10)
    assert again.listed and again.added_ms == 10 and again.tick_size == 0.5


def test_every_problem_of_a_request_is_reported():
    with pytest.raises(InvalidMessage) as err:
        apply_request(
            SymbolRequest("bad sym", tick_size=1e-13, volume_precision=-1, price_band_pct=-5, description="x\n"),
            None,
            0,
        )
    assert len(err.value.details["problems"]) == 5
