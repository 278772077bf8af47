"""The WebSocket protocol ``tvflux serve`` gives uvicorn: uvicorn's own, except that

* a frame over ``TVFLUX_MAX_FRAME_BYTES`` gets an error message before the close, and
* the application may write whole text frames straight into the transport
  (:data:`DIRECT_WRITE`, an ASGI scope extension): the fan-out writes a push to thousands
  of connections as plain non-blocking writes, without an ``await`` and a task switch per
  frame through Litestar's and uvicorn's send path. The writer returns the bytes the
  transport still holds, which is how a client that stopped reading is detected.

The size limit is enforced by the WebSocket library while it reads a frame's header, before
the application sees anything (so an oversized frame is never buffered). Left alone, it
closes with 1009 and the client learns nothing else; here the same close is preceded by
``{"type": "error", "error": {"code": "payload_too_large", …}}`` on ``/ws`` and
``/ws/ingest`` alike (the text comes from :func:`service.api.errors.frame_too_large`).
"""

from __future__ import annotations

from uvicorn.protocols.websockets.websockets_impl import WebSocketProtocol
from websockets.frames import CloseCode, Opcode
from websockets.protocol import State

from service.api.errors import frame_too_large

DIRECT_WRITE = "tvflux.direct_write"


class FrameLimitProtocol(WebSocketProtocol):
    async def run_asgi(self) -> None:
        extensions: dict[str, object] = self.scope.setdefault("extensions", {})  # type: ignore[assignment]
        extensions[DIRECT_WRITE] = self.write_text_now
        await super().run_asgi()

    def write_text_now(self, frame: bytes) -> int:
        """Write one text frame now; the bytes still unsent. Raises once the connection
        is no longer open (the handler then ends it).

        A server's frames are not masked and tvflux negotiates no extension, so the frame
        on the wire is a 2-10 byte header and the payload: written here directly rather
        than through the library's frame objects (a third of an edge's CPU per frame)."""
        if self.state is not State.OPEN:
            raise ConnectionError(f"websocket {self.state.name.lower()}")
        if self.extensions:  # not ours to frame (a deflate the client negotiated elsewhere)
            self.write_frame_sync(True, Opcode.TEXT, frame)
        else:
            self.transport.write(text_frame(frame))
        return self.transport.get_write_buffer_size()

    def fail_connection(self, code: int = CloseCode.ABNORMAL_CLOSURE, reason: str = "") -> None:
        if code == CloseCode.MESSAGE_TOO_BIG and self.state is State.OPEN:
            limit = int(self.max_size or 0)
            size = getattr(getattr(self, "transfer_data_exc", None), "size", None)  # PayloadTooBig's
            try:
                self.write_frame_sync(True, Opcode.TEXT, frame_too_large(size, limit))
            except Exception:  # the transport is gone: the close below says what it can
                pass
            reason = reason or "message too big"
        super().fail_connection(code, reason)


def text_frame(payload: bytes) -> bytes:
    """A final, unmasked text frame (RFC 6455 §5.2) as a server sends it."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return b"\x81\x7e" + size.to_bytes(2, "big") + payload
    return b"\x81\x7f" + size.to_bytes(8, "big") + payload
