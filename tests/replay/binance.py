"""Binance spot as documented (binance-spot-api-docs: web-socket-streams.md, rest-api.md):
the combined stream ``/stream?streams=<symbol>@aggTrade/...`` (``{"stream", "data"}``,
lower-case stream names, ``!serverShutdown``), ``GET /api/v3/aggTrades`` (``fromId`` /
``startTime`` inclusive, ``limit`` ≤ 1000, newest rows when neither is given, weight 4) and
``GET /api/v3/exchangeInfo?symbols=[...]``, with ``X-MBX-USED-WEIGHT-1M`` on every answer,
429 + ``Retry-After`` and 418 when a test asks for them."""

from __future__ import annotations

import json
import time

from aiohttp import web

from tests.replay.harness import Connection, ReplayServer, Row

STREAM = "@aggtrade"


def agg_trade(symbol: str, r: Row, micro_s: bool = False) -> dict[str, object]:
    t = r.time_ms * 1000 + 123 if micro_s else r.time_ms  # µs: the ms floor is the trade time
    first = -1 if r.placeholder else r.id * 3
    return {
        "a": r.id,
        "p": r.price,
        "q": r.size,
        "f": first,
        "l": -1 if r.placeholder else first + 2,
        "T": t,
        "m": True,
        "M": True,
    }


class BinanceReplay:
    ws_path = "/stream"
    heartbeat_s = None  # Binance sends trades and ping frames only

    def __init__(self) -> None:
        self.used_weight = 0

    def accept(self, conn: Connection, server: ReplayServer) -> None:
        for name in conn.request.query.get("streams", "").split("/"):
            if name.lower().endswith(STREAM):
                conn.subscribed.add(name[: -len(STREAM)].upper())

    def on_client_message(self, conn: Connection, text: str, server: ReplayServer) -> list[str]:
        return []  # tvflux names its streams in the URL; nothing to answer

    def trade_messages(self, symbol: str, rows: list[Row], server: ReplayServer) -> list[str]:
        micro_s = server.faults.micro_s
        out = []
        for r in rows:
            data = {"e": "aggTrade", "E": int(time.time() * 1000), "s": symbol, **agg_trade(symbol, r, micro_s)}
            out.append(json.dumps({"stream": f"{symbol.lower()}@aggTrade", "data": data}))
        return out

    def heartbeat(self) -> str:
        raise NotImplementedError

    @staticmethod
    def server_shutdown() -> str:
        return json.dumps({"stream": "!serverShutdown", "data": {"e": "serverShutdown", "E": int(time.time() * 1000)}})

    def routes(self, server: ReplayServer) -> list[web.RouteDef]:
        def answer(request: web.Request, weight: int, body: object) -> web.Response:
            status, headers = server.answer_rest(request)
            self.used_weight += weight
            headers = {"X-MBX-USED-WEIGHT-1M": str(self.used_weight), **headers}
            if status != 200:
                msg = {"code": -1003, "msg": "Too many requests; IP banned." if status == 418 else "Too many requests."}
                return web.json_response(msg, status=status, headers=headers)
            return web.json_response(body, headers=headers)

        async def agg_trades(request: web.Request) -> web.Response:
            q = request.query
            book = server.books.get(q.get("symbol", ""))
            if book is None:
                return web.json_response({"code": -1121, "msg": "Invalid symbol."}, status=400)
            limit = min(int(q.get("limit", "500")), 1000)
            if "fromId" in q:
                rows = book.since_id(int(q["fromId"]), limit, server.faults.rest_min_id)
            elif "startTime" in q:
                rows = book.since_time(int(q["startTime"]), limit, server.faults.rest_min_id)
            else:
                rows = book.rows[-limit:]
            return answer(request, 4, [agg_trade(q["symbol"], r, server.faults.micro_s) for r in rows])

        async def exchange_info(request: web.Request) -> web.Response:
            wanted = json.loads(request.query.get("symbols", "[]"))
            symbols = [
                {
                    "symbol": s,
                    "status": "TRADING",
                    "filters": [
                        {
                            "filterType": "PRICE_FILTER",
                            "minPrice": "0.01000000",
                            "maxPrice": "1000000.00000000",
                            "tickSize": "0.01000000",
                        },
                        {
                            "filterType": "LOT_SIZE",
                            "minQty": "0.00001000",
                            "maxQty": "9000.00000000",
                            "stepSize": "0.00001000",
                        },
                    ],
                }
                for s in wanted
                if s in server.books
            ]
            return answer(request, 20, {"timezone": "UTC", "serverTime": int(time.time() * 1000), "symbols": symbols})

        return [web.get("/api/v3/aggTrades", agg_trades), web.get("/api/v3/exchangeInfo", exchange_info)]
