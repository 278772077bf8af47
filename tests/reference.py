"""An independent reference for bar aggregation (pandas), used only by tests."""

from __future__ import annotations

import pandas as pd

from service.core.resolution import Resolution, Unit


def reference_bars(trades: list[dict], resolution: Resolution) -> list[dict]:
    """OHLCV per bucket from plain trade dicts ({"time" ms, "price", "size"}), in arrival
    order for ties, using pandas' own calendar arithmetic for buckets."""
    if not trades:
        return []
    df = pd.DataFrame(trades)
    df["seq"] = range(len(df))
    t = pd.to_datetime(df["time"], unit="ms")  # naive UTC
    if resolution.unit is Unit.MONTH:
        bucket = t.dt.to_period("M").dt.start_time
    elif resolution.unit is Unit.WEEK:
        bucket = (t - pd.to_timedelta(t.dt.day_of_week, unit="D")).dt.normalize()
    else:
        bucket = t.dt.floor(pd.Timedelta(milliseconds=resolution.size_ms))  # epoch-anchored
    df["bucket"] = (bucket - pd.Timestamp("1970-01-01")) // pd.Timedelta(milliseconds=1)
    df = df.sort_values(["bucket", "time", "seq"])
    g = df.groupby("bucket", sort=True)
    out = pd.DataFrame(
        {
            "open": g["price"].first(),
            "high": g["price"].max(),
            "low": g["price"].min(),
            "close": g["price"].last(),
            "volume": g["size"].sum(),
        }
    )
    out["time"] = out.index.astype("int64")
    return out[["time", "open", "high", "low", "close", "volume"]].to_dict("records")
