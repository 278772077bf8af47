import pytest

from service.core.errors import ConfigError
from service.core.settings import Secret, Settings, load_settings
from service.core.sources import VENUES


def test_defaults_without_environment():
    s = load_settings({})
    assert s == Settings()
    assert (s.host, s.port, s.store, s.symbols) == ("127.0.0.1", 8000, "duckdb", ("BTCUSD", "ETHUSD", "LTCUSD"))
    assert [t.name for t in s.plan.tiers] == ["1m", "5m", "15m", "1h", "4h", "1d"]


def test_values_are_parsed():
    s = load_settings(
        {
            "TVFLUX_PORT": "9000",
            "TVFLUX_SYMBOLS": "AAA, BBB",
            "TVFLUX_SYNTHETIC_RATE": "0",
            "TVFLUX_TIERS": "1m,1h",
            "TVFLUX_LOG_LEVEL": "debug",
            "HOME": "/x",
        }
    )
    assert (s.port, s.symbols, s.synthetic_rate, s.tiers, s.log_level) == (
        9000,
        ("AAA", "BBB"),
        0.0,
        ("1m", "1h"),
        "DEBUG",
    )


def test_every_bad_variable_is_reported_at_once():
    with pytest.raises(ConfigError) as info:
        load_settings(
            {
                "TVFLUX_PORT": "http",
                "TVFLUX_STORE": "mongo",
                "TVFLUX_SYNTHETIC_RATE": "-1",
                "TVFLUX_SYMBOLS": " , ",
                "TVFLUX_PORTT": "1",
            }
        )
    problems = "\n".join(info.value.problems)
    for name in ("TVFLUX_PORT=", "TVFLUX_STORE=", "TVFLUX_SYNTHETIC_RATE=", "TVFLUX_SYMBOLS=", "TVFLUX_PORTT: unknown"):
        assert name in problems
    assert len(info.value.problems) == 5


def test_the_tools_variables_are_not_refused():
    """docs/influxdb.md tells users to export TVFLUX_INFLUXD for the tests; a `tvflux`
    command run in that shell must not fail with "unknown setting"."""
    env = {"TVFLUX_INFLUXD": "/opt/influxd", "TVFLUX_NATS_SERVER": "/usr/sbin/nats-server", "TVFLUX_CHROMIUM": "/x"}
    assert load_settings(env) == load_settings({})


def test_bad_tiers_and_influx_without_url():
    with pytest.raises(ConfigError) as info:
        load_settings({"TVFLUX_TIERS": "7m", "TVFLUX_STORE": "influx"})
    text = "\n".join(info.value.problems)
    assert "TVFLUX_INFLUX_URL" in text


def test_tokens_never_show_in_reprs_or_errors():
    s = load_settings({"TVFLUX_INFLUX_TOKEN": "hunter2"})
    assert s.influx_token == "hunter2"
    assert "hunter2" not in repr(s) and "hunter2" not in repr(Secret("hunter2"))


def test_overrides_win():
    assert load_settings({"TVFLUX_PORT": "1"}, port=2, host=None).port == 2


def test_checks_come_from_the_one_declaration():
    # bounds from Meta(ge, le), choices from Literal (log level in any case), sizes from a pattern
    with pytest.raises(ConfigError) as info:
        load_settings(
            {
                "TVFLUX_PORT": "70000",
                "TVFLUX_DUCKDB_MEMORY_LIMIT": "lots",
                "TVFLUX_SEND_TIMEOUT_S": "nan",
                "TVFLUX_MAX_BARS": "0",
                "TVFLUX_CORS_ORIGINS": ",",
            }
        )
    assert sorted(info.value.problems) == [
        "TVFLUX_CORS_ORIGINS=',': must list at least one item, comma-separated",
        "TVFLUX_DUCKDB_MEMORY_LIMIT='lots': must be a size such as 512MB or 2GB",
        "TVFLUX_MAX_BARS='0': must be >= 1",
        "TVFLUX_PORT='70000': must be <= 65535",
        "TVFLUX_SEND_TIMEOUT_S='nan': must be a finite number >= 0.01",
    ]
    s = load_settings({"TVFLUX_LOG_LEVEL": "warning", "TVFLUX_DUCKDB_MEMORY_LIMIT": " 2 GB "})
    assert (s.log_level, s.duckdb_memory_limit) == ("WARNING", "2 GB")


def test_a_bad_token_is_never_echoed():
    with pytest.raises(ConfigError) as info:
        load_settings({"TVFLUX_ADMIN_TOKEN": "hunter2", "TVFLUX_STORE": "influx"})
    assert "hunter2" not in "\n".join(info.value.problems)


def test_sources_are_parsed_and_every_bad_entry_reported():
    s = load_settings({"TVFLUX_SOURCES": "binance:btcusdt=BTCUSD, kraken:BTC/USD=BTCUSD.KRK"})
    assert [(f.venue, f.venue_symbol, f.symbol) for f in s.feeds] == [
        ("binance", "BTCUSDT", "BTCUSD"),
        ("kraken", "BTC/USD", "BTCUSD.KRK"),
    ]
    assert s.binance_ws_url == "wss://stream.binance.com:9443" and s.binance_rest_url == "https://api.binance.com"
    with pytest.raises(ConfigError) as info:
        load_settings(
            {
                "TVFLUX_SOURCES": "bitmex:XBTUSD=X,binance:BTCUSDT,binance:BTCUSDT=A,coinbase:BTC-USD=A",
                "TVFLUX_BINANCE_WS_URL": "http://127.0.0.1:1",
            }
        )
    text = str(info.value)
    assert "unknown venue 'bitmex'" in text
    assert "expected venue:VENUE_SYMBOL=SYMBOL" in text
    assert "A is already fed by binance:BTCUSDT" in text
    assert "TVFLUX_BINANCE_WS_URL" in text


def test_each_venue_has_its_own_urls():
    env = {}
    for venue in VENUES:
        env[f"TVFLUX_{venue.upper()}_WS_URL"] = f"ws://127.0.0.1:1/{venue}"
        env[f"TVFLUX_{venue.upper()}_REST_URL"] = f"http://127.0.0.1:2/{venue}"
    s = load_settings(env)
    assert {v: s.venue_urls(v) for v in VENUES} == {
        v: (f"ws://127.0.0.1:1/{v}", f"http://127.0.0.1:2/{v}") for v in ("binance", "coinbase", "kraken")
    }


def test_symbols_follow_the_rule_ingest_applies():
    """A symbol no trade could ever carry (ingest refuses the name) is refused at start."""
    with pytest.raises(ConfigError) as err:
        load_settings({"TVFLUX_SYMBOLS": "BTCUSD,BTC USD,-X,ETH/USD"})
    assert len(err.value.problems) == 2
    assert all(p.startswith("TVFLUX_SYMBOLS: ") for p in err.value.problems)
    assert "'BTC USD' is not a valid symbol" in err.value.problems[0]
    assert load_settings({"TVFLUX_SYMBOLS": "BTCUSD, ETH/USD"}).symbols == ("BTCUSD", "ETH/USD")
