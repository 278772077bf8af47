"""Streaming endpoints: ``/ws`` (live bars), ``/ws/ingest`` (trade batches with acks) and
``/api/stream`` (the same bar messages as Server-Sent Events).

Each connection has one :class:`~service.runtime.hub.Client` outbox and one sender task: the
receive loop never writes to the socket itself, so replies (pong, errors) and bars are
sent in order by one writer. A recoverable mistake (bad JSON, unknown op, unknown symbol)
gets an error message and the connection stays open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, cast

import msgspec
from litestar import Request, WebSocket, get, websocket
from litestar.connection import ASGIConnection
from litestar.response import ServerSentEvent
from litestar.response.sse import ServerSentEventMessage
from litestar.types import WebSocketReceiveEvent

from service.api.auth import check_ingest, client_address
from service.api.errors import ws_error
from service.api.http import Query, required_params
from service.api.services import LiveServices, LiveServicesDep, ServicesDep
from service.api.wsproto import DIRECT_WRITE
from service.core.errors import InvalidMessage, Overloaded, TvfluxError, UnknownSubscription
from service.core.models import (
    ClientMessage,
    EdgeStats,
    ErrorMessage,
    IngestAck,
    Ping,
    Pong,
    Subscribe,
    Subscribed,
    TradesDecoder,
    Unsubscribe,
)
from service.core.resolution import parse_resolution
from service.core.ws import CloseCode
from service.runtime.clock import now_ms
from service.runtime.fanout import PROTOCOL_V2, Client, Writer, topic_name

log = logging.getLogger(__name__)

_client_decoder = msgspec.json.Decoder(ClientMessage)
_trades_json = TradesDecoder("json")
_trades_msgpack = TradesDecoder("msgpack")
_encode = msgspec.json.Encoder().encode


async def _send_loop(socket: WebSocket, client: Client, send_timeout_s: float) -> None:
    """The writer of a connection whose frames queue (no direct transport write: e.g.
    under the ASGI test client). Under ``tvflux serve`` frames are written where they are
    produced and this task only waits for a cut-off."""
    loop = asyncio.get_running_loop()
    while client.cut_reason is None:
        await client.wake.wait()
        client.wake.clear()
        frames = client.take()
        try:
            # one timeout rescheduled per send: wait_for would create a task per frame
            async with asyncio.timeout(None) as deadline:
                for frame in frames:
                    deadline.reschedule(loop.time() + send_timeout_s)
                    await socket.send_text(frame.decode())
        except TimeoutError:
            client.cut(f"a send took longer than {send_timeout_s}s")
    with contextlib.suppress(Exception):
        await asyncio.wait_for(socket.close(code=CloseCode.TOO_SLOW, reason="too slow: " + client.cut_reason[:80]), 1)


def _protocol_version(socket: WebSocket) -> int:
    version = socket.query_params.get("v", "1")
    if version not in ("1", "2"):
        raise InvalidMessage(f"unknown protocol version v={version[:16]}: use v=1 or v=2")
    return int(version)


@websocket("/ws")
async def ws_bars(socket: WebSocket, services: LiveServicesDep) -> None:
    settings = services.settings
    hub = services.hub
    await socket.accept()
    address = _address(socket)
    try:
        version = _protocol_version(socket)
        services.connections.acquire(address)
    except TvfluxError as exc:
        await _refuse(socket, exc, CloseCode.TOO_MANY if isinstance(exc, Overloaded) else CloseCode.BAD_REQUEST)
        return
    write = cast("Writer | None", (socket.scope.get("extensions") or {}).get(DIRECT_WRITE))
    client = Client(
        address,
        version=version,
        write=write,
        buffer_max_bytes=settings.client_buffer_max_bytes,
        send_timeout_s=settings.send_timeout_s,
    )
    hub.register(client)
    sender = asyncio.create_task(_send_loop(socket, client, settings.send_timeout_s))
    try:
        while True:
            # Wait for the client's next message *or* the sender's end (a cut-off client
            # that stopped reading may also never send again).
            receive = asyncio.ensure_future(socket.receive())
            await asyncio.wait({receive, sender}, return_when=asyncio.FIRST_COMPLETED)
            if not receive.done():
                receive.cancel()
                break
            event = receive.result()
            if event["type"] == "websocket.disconnect":
                break
            if event["type"] != "websocket.receive":  # websocket.connect comes once, before accept
                continue
            data = _payload(event)
            sub_id = None
            try:
                msg = _client_decoder.decode(data or b"")
                if isinstance(msg, Subscribe):
                    sub_id = msg.id
                    services.require_ready()
                    services.symbols.require(msg.symbol)
                    resolution = parse_resolution(msg.resolution)
                    if msg.id not in client.subs and len(client.subs) >= settings.max_subscriptions_per_connection:
                        raise InvalidMessage(
                            f"at most {settings.max_subscriptions_per_connection} subscriptions per connection"
                        )
                    if version == PROTOCOL_V2:
                        # before the open bar, which subscribe() sends
                        client.send(_encode(Subscribed(msg.id, topic_name((msg.symbol, resolution)))))
                    await hub.subscribe(client, msg.id, msg.symbol, resolution)
                elif isinstance(msg, Unsubscribe):
                    sub_id = msg.id
                    if not hub.unsubscribe(client, msg.id):  # a typo'd id would otherwise stream on unnoticed
                        raise UnknownSubscription(
                            f"no subscription {msg.id!r} on this connection", details={"id": msg.id}
                        )
                elif isinstance(msg, Ping):
                    client.send(_encode(Pong()))
                elif isinstance(msg, EdgeStats):
                    client.edge_stats = (msg.clients, msg.subscriptions)
            except (TvfluxError, msgspec.DecodeError, msgspec.ValidationError) as exc:
                client.send(_encode(ws_error(exc, sub_id)))
    finally:
        services.connections.release(address)
        hub.unregister(client)
        if client.cut_reason is None:
            sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender


@websocket("/ws/ingest")
async def ws_ingest(socket: WebSocket, services: ServicesDep) -> None:
    """Each frame is a JSON array (text) or a msgpack array (binary) of trades; each gets
    an ``ack`` (or an ``error``) carrying the frame's sequence number on this connection."""
    await socket.accept()
    try:
        check_ingest(socket)
    except TvfluxError as exc:
        await _refuse(socket, exc, CloseCode.UNAUTHORIZED)
        return
    seq = 0
    while True:
        event = await socket.receive()
        if event["type"] == "websocket.disconnect":
            return
        if event["type"] != "websocket.receive":  # websocket.connect comes once, before accept
            continue
        seq += 1
        try:
            services.require_ready()
            payload = _payload(event)
            if isinstance(payload, bytes):
                trades = _trades_msgpack.decode_batch(payload)
            else:
                trades = _trades_json.decode_batch(payload)
            result = await services.ingestor.accept(trades, now_ms())
            reply: IngestAck | ErrorMessage = IngestAck(seq, result.accepted, result.duplicates)
        except TvfluxError as exc:  # the same codes as POST /api/trades
            reply = ws_error(exc, seq=seq)
        await socket.send_text(_encode(reply).decode())


@get("/api/stream")
async def sse_stream(
    request: Request, services: LiveServicesDep, symbol: Query = None, resolution: Query = None
) -> ServerSentEvent:
    required_params(symbol=symbol, resolution=resolution)
    services.require_ready()
    symbol = symbol or ""
    services.symbols.require(symbol)
    res = parse_resolution(resolution or "")
    address = _address(request)
    services.connections.acquire(address)
    client = Client(address, buffer_max_bytes=services.settings.client_buffer_max_bytes)
    services.hub.register(client)
    try:
        await services.hub.subscribe(client, "stream", symbol, res)
    except BaseException:
        services.hub.unregister(client)
        services.connections.release(address)
        raise
    return ServerSentEvent(_sse_events(services, client, address))


def _payload(event: WebSocketReceiveEvent) -> str | bytes:
    """A ``websocket.receive`` event's frame: ASGI gives its text or its bytes."""
    text = event.get("text")
    return text if text is not None else (event.get("bytes") or b"")


def _address(conn: ASGIConnection[Any, Any, Any, Any]) -> str:
    return client_address(conn)


async def _refuse(socket: WebSocket, exc: TvfluxError, code: CloseCode) -> None:
    """Tell the client why in an error message, then close with ``code``."""
    with contextlib.suppress(Exception):
        await socket.send_text(_encode(ws_error(exc)).decode())
        await socket.close(code=code, reason=exc.message[:120])


async def _sse_events(
    services: LiveServices, client: Client, address: str
) -> AsyncIterator[str | ServerSentEventMessage]:
    try:
        while client.cut_reason is None:
            try:
                await asyncio.wait_for(client.wake.wait(), 15)
            except TimeoutError:
                yield ServerSentEventMessage(comment="keep-alive")  # proxies close idle streams
                continue
            client.wake.clear()
            for frame in client.take():
                yield frame.decode()
            if not client.subs:  # its one subscription ended (its symbol was removed): so does the stream
                break
    finally:
        services.hub.unregister(client)
        services.connections.release(address)


STREAM_ROUTES = [ws_bars, ws_ingest, sse_stream]
