"""A minimal keep-alive HTTP/1.1 client on asyncio streams, for loopback load.

One request at a time per connection (no pipelining), ``Content-Length`` or chunked
bodies, reconnect on a closed connection. It exists because the generator must cost
less than the server it measures: no per-request object graph, no cookie jars.
"""

from __future__ import annotations

import asyncio


class HttpError(Exception):
    pass


class HttpConnection:
    def __init__(self, host: str, port: int, *, headers: dict[str, str] | None = None, timeout_s: float = 30.0) -> None:
        self.host, self.port = host, port
        self.timeout_s = timeout_s
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._head_suffix = f"Host: {host}:{port}\r\n{extra}".encode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), self.timeout_s
        )

    async def request(
        self, method: str, path: str, body: bytes | None = None, content_type: str = "application/json"
    ) -> tuple[int, bytes]:
        """Send one request, return ``(status, body)``. Retries once on a stale connection."""
        for attempt in (0, 1):
            if self._writer is None:
                await self._connect()
            try:
                return await asyncio.wait_for(self._roundtrip(method, path, body, content_type), self.timeout_s)
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                await self.close()
                if attempt:
                    raise HttpError(f"{method} {path}: {exc}") from exc
        raise AssertionError("unreachable")

    async def _roundtrip(self, method: str, path: str, body: bytes | None, content_type: str) -> tuple[int, bytes]:
        assert self._reader is not None and self._writer is not None
        head = f"{method} {path} HTTP/1.1\r\n".encode() + self._head_suffix
        if body is not None:
            head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n".encode()
        self._writer.write(head + b"\r\n" + (body or b""))
        reader = self._reader
        status_line = await reader.readuntil(b"\r\n")
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
            raise HttpError(f"bad status line {status_line!r}")
        status = int(parts[1])
        length = None
        chunked = close = False
        while True:
            line = await reader.readuntil(b"\r\n")
            if line == b"\r\n":
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                close = True
        if chunked:
            chunks = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    break
                chunks.append(await reader.readexactly(size))
                await reader.readexactly(2)
            payload = b"".join(chunks)
        elif length is not None:
            payload = await reader.readexactly(length)
        else:
            payload = await reader.read()
            close = True
        if close:
            await self.close()
        return status, payload

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass
