"""The chart benchmark's server time: a median read off two /metrics scrapes."""

from bench.chart import histogram_quantile, parse_histogram

METRICS = """# HELP tvflux_history_request_seconds Duration of history requests
tvflux_history_request_seconds_bucket{le="0.0005",resolution="1"} 4.0
tvflux_history_request_seconds_bucket{le="0.001",resolution="1"} 10.0
tvflux_history_request_seconds_bucket{le="+Inf",resolution="1"} 12.0
tvflux_history_request_seconds_bucket{le="0.001",resolution="5"} 99.0
"""


def test_parse_histogram_takes_one_resolution():
    bounds, counts = parse_histogram(METRICS, "1")
    assert bounds == [0.0005, 0.001, float("inf")] and counts == [4.0, 10.0, 12.0]


def test_quantile_of_the_delta_is_interpolated_inside_its_bucket():
    bounds = [0.0005, 0.001, float("inf")]
    # 10 new observations: 2 below 0.5 ms, 8 between 0.5 and 1 ms
    assert histogram_quantile(bounds, [4, 10, 12], [6, 20, 22], 0.5) == 0.5 + 0.5 * (5 - 2) / 8
    assert histogram_quantile(bounds, [], [0, 0, 0], 0.5) is None
    assert histogram_quantile(bounds, [0, 0, 0], [0, 0, 4], 0.5) == 1.0  # all in +Inf: the last bound
