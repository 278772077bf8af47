"""What an edge does not serve itself goes to the core: plain HTTP is forwarded request by
request, ``/ws/ingest`` is relayed frame by frame. The core sees the client's address in
``X-Forwarded-For`` and the client's own headers (tokens included)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import httpx
import websockets
from litestar.enums import ScopeType
from litestar.types import HTTPScope, Receive, Scope, Send, WebSocketScope

from service.core.ws import CloseCode

log = logging.getLogger(__name__)

# hop-by-hop headers (RFC 9110 §7.6.1) and those httpx recomputes
_SKIP = {
    b"connection",
    b"keep-alive",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
    b"host",
    b"content-length",
    b"x-forwarded-for",  # replaced by the client's address as the edge sees it
}
_WS_SKIP = _SKIP | {b"sec-websocket-key", b"sec-websocket-version", b"sec-websocket-extensions"}


def _forwarded(scope: HTTPScope | WebSocketScope, skip: set[bytes]) -> list[tuple[str, str]]:
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"] if k.lower() not in skip]
    client = scope.get("client")
    if client:
        headers.append(("x-forwarded-for", client[0]))
    return headers


class CoreProxy:
    def __init__(self, core_url: str, *, max_body_bytes: int, timeout_s: float = 60.0) -> None:
        self.core_url = core_url.rstrip("/")
        self.max_body_bytes = max_body_bytes
        self._http = httpx.AsyncClient(
            base_url=self.core_url, timeout=timeout_s, limits=httpx.Limits(max_connections=200)
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.WEBSOCKET:
            await self._relay(scope, receive, send)
        elif scope["type"] == ScopeType.HTTP:
            await self._forward(scope, receive, send)

    async def _forward(self, scope: HTTPScope, receive: Receive, send: Send) -> None:
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":  # http.disconnect: the client is gone
                return
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                await _answer(send, 413, b'{"error":{"code":"payload_too_large","message":"request body too large"}}')
                return
            if not message.get("more_body"):
                break
        query = scope.get("query_string", b"").decode("latin-1")
        path = scope["path"] + (f"?{query}" if query else "")
        try:
            request = self._http.build_request(
                scope["method"], path, headers=_forwarded(scope, _SKIP), content=bytes(body)
            )
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            log.warning("core unreachable for %s %s: %s", scope["method"], scope["path"], exc)
            await _answer(
                send, 503, b'{"error":{"code":"store_unavailable","message":"the core process is unreachable"}}'
            )
            return
        try:
            headers = [
                (k.encode("latin-1"), v.encode("latin-1"))
                for k, v in response.headers.multi_items()
                if k.lower().encode() not in _SKIP and k.lower() != "content-encoding"
            ]
            await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()

    async def _relay(self, scope: WebSocketScope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        query = scope.get("query_string", b"").decode("latin-1")
        url = self.core_url.replace("http", "ws", 1) + scope["path"] + (f"?{query}" if query else "")
        try:
            upstream = await websockets.connect(
                url, additional_headers=_forwarded(scope, _WS_SKIP), max_size=None, compression=None
            )
        except (OSError, websockets.exceptions.WebSocketException) as exc:
            log.warning("core unreachable for %s: %s", scope["path"], exc)
            await send(
                {
                    "type": "websocket.close",
                    "code": CloseCode.TRY_AGAIN_LATER,
                    "reason": "the core process is unreachable",
                }
            )
            return
        await send({"type": "websocket.accept", "subprotocol": None, "headers": []})

        async def client_to_core() -> None:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message["type"] == "websocket.receive":  # (connect came before accept)
                    text = message.get("text")  # the server may leave out the key it does not use
                    await upstream.send(text if text is not None else message.get("bytes") or b"")

        async def core_to_client() -> None:
            async for data in upstream:
                if isinstance(data, str):
                    await send({"type": "websocket.send", "text": data, "bytes": None})
                else:
                    await send({"type": "websocket.send", "bytes": data, "text": None})

        tasks = [asyncio.create_task(client_to_core()), asyncio.create_task(core_to_client())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await upstream.close()
            code = upstream.close_code or CloseCode.NORMAL
            with contextlib.suppress(Exception):
                await send({"type": "websocket.close", "code": code, "reason": upstream.close_reason or ""})


async def _answer(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body, "more_body": False})
