"""Kraken spot as documented (docs.kraken.com: WebSocket v2 ``trade`` channel, REST
``/0/public/Trades`` and ``/0/public/AssetPairs``): a subscribe is answered with
``success`` and a snapshot of the newest trades, then ``update`` messages; a ``heartbeat``
a second on a subscribed connection; ``{"method": "ping"}`` gets a ``pong``. REST
``Trades`` answers the rows after ``since`` (ns) with ``last``, the ``since`` of the next
page; a rate limit is an HTTP 200 with ``EGeneral:Too many requests`` in ``error``."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from aiohttp import web

from tests.replay.harness import Connection, ReplayServer, Row

SNAPSHOT = 50  # trades a new subscription gets first
PAIRS = {  # v2 symbol -> (REST key, altname, wsname)
    "BTC/USD": ("XXBTZUSD", "XBTUSD", "XBT/USD"),
    "ETH/USD": ("XETHZUSD", "ETHUSD", "ETH/USD"),
}


def rfc3339(time_ms: int) -> str:
    dt = datetime.fromtimestamp(time_ms // 1000, UTC)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{time_ms % 1000:03d}421Z"  # µs, as Kraken sends: the ms floor is the time


def trade_json(symbol: str, r: Row) -> str:
    # price and qty are JSON numbers: written from the decimal text, so no float rounding
    return (
        f'{{"symbol":"{symbol}","side":"buy","price":{r.price},"qty":{r.size},'
        f'"ord_type":"market","trade_id":{r.id},"timestamp":"{rfc3339(r.time_ms)}"}}'
    )


class KrakenReplay:
    ws_path = "/v2"
    heartbeat_s = 1.0

    def accept(self, conn: Connection, server: ReplayServer) -> None:
        pass  # Kraken streams what a subscribe asks for

    def on_client_message(self, conn: Connection, text: str, server: ReplayServer) -> list[str]:
        msg = json.loads(text)
        if msg.get("method") == "ping":
            return [json.dumps({"method": "pong", "req_id": msg.get("req_id")})]
        params = msg.get("params", {})
        if msg.get("method") != "subscribe" or params.get("channel") != "trade":
            return [json.dumps({"method": msg.get("method"), "success": False, "error": "Unsupported"})]
        out = []
        for symbol in params.get("symbol", []):
            if symbol not in server.books:
                out.append(
                    json.dumps(
                        {"method": "subscribe", "success": False, "error": f"Currency pair not supported {symbol}"}
                    )
                )
                continue
            conn.subscribed.add(symbol)
            conn.heartbeats = True
            result = {"channel": "trade", "symbol": symbol, "snapshot": True}
            out.append(
                json.dumps({"method": "subscribe", "result": result, "success": True, "req_id": msg.get("req_id")})
            )
            recent = server.books[symbol].rows[-SNAPSHOT:] if params.get("snapshot", True) else []
            data = ",".join(trade_json(symbol, r) for r in recent)
            out.append(f'{{"channel":"trade","type":"snapshot","data":[{data}]}}')
        return out

    def trade_messages(self, symbol: str, rows: list[Row], server: ReplayServer) -> list[str]:
        return [f'{{"channel":"trade","type":"update","data":[{trade_json(symbol, r)}]}}' for r in rows]

    def heartbeat(self) -> str:
        return '{"channel":"heartbeat"}'

    def routes(self, server: ReplayServer) -> list[web.RouteDef]:
        def book_of(pair: str) -> str | None:
            for symbol, names in PAIRS.items():
                if pair in (*names, symbol.replace("/", "")) and symbol in server.books:
                    return symbol
            return None

        async def trades(request: web.Request) -> web.Response:
            status, _ = server.answer_rest(request)
            if status != 200:
                return web.json_response({"error": ["EGeneral:Too many requests"]})
            q = request.query
            symbol = book_of(q.get("pair", ""))
            if symbol is None:
                return web.json_response({"error": ["EQuery:Unknown asset pair"]})
            count = min(int(q.get("count", "1000")), 1000)
            rows = server.books[symbol].rows
            if "since" in q:
                since_ns = int(q["since"])
                since_ns = since_ns * 1_000_000_000 if since_ns < 10**12 else since_ns  # seconds or ns
                rows = [r for r in rows if r.time_ms * 1_000_000 > since_ns and r.id >= server.faults.rest_min_id][
                    :count
                ]
            else:
                rows = rows[-count:]
            last = str(rows[-1].time_ms * 1_000_000) if rows else q.get("since", "0")
            body = ",".join(
                f'["{r.price}","{r.size}",{r.time_ms // 1000}.{r.time_ms % 1000:03d}4,"b","m","",{r.id}]' for r in rows
            )
            key = PAIRS[symbol][0]
            text = f'{{"error":[],"result":{{"{key}":[{body}],"last":"{last}"}}}}'
            return web.Response(text=text, content_type="application/json")

        async def asset_pairs(request: web.Request) -> web.Response:
            server.answer_rest(request)
            result = {
                key: {"altname": alt, "wsname": ws, "pair_decimals": 1, "lot_decimals": 8, "tick_size": "0.1"}
                for symbol, (key, alt, ws) in PAIRS.items()
            }
            return web.json_response({"error": [], "result": result})

        return [web.get("/0/public/Trades", trades), web.get("/0/public/AssetPairs", asset_pairs)]
