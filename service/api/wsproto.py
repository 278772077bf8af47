"""The WebSocket protocol ``tvflux serve`` gives uvicorn: uvicorn's own, except that a
frame over ``TVFLUX_MAX_FRAME_BYTES`` gets an error message before the close.

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


class FrameLimitProtocol(WebSocketProtocol):
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
