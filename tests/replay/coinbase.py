"""Coinbase Advanced Trade as documented (docs.cdp.coinbase.com: the market-data WebSocket,
``market_trades`` and ``heartbeats`` channels; REST ``/api/v3/brokerage/market/products``):
every message is ``{"channel", "client_id", "timestamp", "sequence_num", "events"}``; a
``market_trades`` subscribe gets a ``subscriptions`` answer and a ``snapshot`` of recent
trades, newest first, then ``update`` events; ``heartbeats`` sends one a second. The public
ticker answers the newest ``limit`` trades of ``[start, end]`` (UNIX seconds), newest first;
429 when rate-limited."""

from __future__ import annotations

import itertools
import json
import time
from datetime import UTC, datetime

from aiohttp import web

from tests.replay.harness import Connection, ReplayServer, Row

SNAPSHOT = 50


def rfc3339(time_ms: int) -> str:
    dt = datetime.fromtimestamp(time_ms // 1000, UTC)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{time_ms % 1000:03d}917Z"  # µs, as Coinbase sends: the ms floor is the time


def trade(product: str, r: Row) -> dict[str, str]:
    return {
        "trade_id": str(r.id),
        "product_id": product,
        "price": r.price,
        "size": r.size,
        "side": "BUY",
        "time": rfc3339(r.time_ms),
    }


class CoinbaseReplay:
    ws_path = "/"
    heartbeat_s = 1.0

    def __init__(self) -> None:
        self._seq = itertools.count()
        self._beats = itertools.count(1)

    def _message(self, channel: str, events: list[dict[str, object]]) -> str:
        now = rfc3339(int(time.time() * 1000))
        return json.dumps(
            {"channel": channel, "client_id": "", "timestamp": now, "sequence_num": next(self._seq), "events": events}
        )

    def accept(self, conn: Connection, server: ReplayServer) -> None:
        pass

    def on_client_message(self, conn: Connection, text: str, server: ReplayServer) -> list[str]:
        msg = json.loads(text)
        channel = msg.get("channel")
        if msg.get("type") != "subscribe" or channel not in ("market_trades", "heartbeats"):
            return [json.dumps({"type": "error", "message": "Failure to subscribe"})]
        if channel == "heartbeats":
            conn.heartbeats = True
            return [self._message("subscriptions", [{"subscriptions": {"heartbeats": ["heartbeats"]}}])]
        products = [p for p in msg.get("product_ids", []) if p in server.books]
        conn.subscribed.update(products)
        out = [self._message("subscriptions", [{"subscriptions": {"market_trades": products}}])]
        for p in products:
            recent = [trade(p, r) for r in reversed(server.books[p].trades()[-SNAPSHOT:])]
            out.append(self._message("market_trades", [{"type": "snapshot", "trades": recent}]))
        return out

    def trade_messages(self, symbol: str, rows: list[Row], server: ReplayServer) -> list[str]:
        live = [r for r in rows if not r.placeholder]
        return [self._message("market_trades", [{"type": "update", "trades": [trade(symbol, r)]}]) for r in live]

    def heartbeat(self) -> str:
        now = rfc3339(int(time.time() * 1000))
        return self._message("heartbeats", [{"current_time": now, "heartbeat_counter": next(self._beats)}])

    def routes(self, server: ReplayServer) -> list[web.RouteDef]:
        async def ticker(request: web.Request) -> web.Response:
            status, headers = server.answer_rest(request)
            if status != 200:
                return web.json_response({"message": "Too many requests"}, status=status, headers=headers)
            product = request.match_info["product"]
            if product not in server.books:
                return web.json_response({"error": "NOT_FOUND", "message": "product not found"}, status=404)
            q = request.query
            limit = min(int(q.get("limit", "100")), 1000)
            rows = [r for r in server.books[product].trades() if r.id >= server.faults.rest_min_id]
            if "start" in q:
                rows = [r for r in rows if int(q["start"]) * 1000 <= r.time_ms]
            if "end" in q:
                rows = [r for r in rows if r.time_ms < (int(q["end"]) + 1) * 1000]
            newest = [trade(product, r) for r in reversed(rows[-limit:])]
            return web.json_response({"trades": newest, "best_bid": "", "best_ask": ""})

        async def product(request: web.Request) -> web.Response:
            server.answer_rest(request)
            product = request.match_info["product"]
            if product not in server.books:
                return web.json_response({"error": "NOT_FOUND", "message": "product not found"}, status=404)
            return web.json_response(
                {
                    "product_id": product,
                    "price": "30000.00",
                    "base_increment": "0.00000001",
                    "quote_increment": "0.01",
                    "price_increment": "0.01",
                    "status": "online",
                }
            )

        base = "/api/v3/brokerage/market/products/{product}"
        return [web.get(base + "/ticker", ticker), web.get(base, product)]
