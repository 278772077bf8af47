"""The WebSocket constants of ``/ws`` and ``/ws/ingest``, in one place: the close codes
tvflux sends (docs/api.md lists them for clients) and the kinds of frame a push carries."""

from __future__ import annotations

from enum import IntEnum, StrEnum


class CloseCode(IntEnum):
    NORMAL = 1000
    MESSAGE_TOO_BIG = 1009  # a frame over TVFLUX_MAX_FRAME_BYTES (after an error message)
    TRY_AGAIN_LATER = 1013  # an edge cannot reach its core
    TOO_SLOW = 4008  # the client did not read fast enough and was cut off
    TOO_MANY = 4029  # too many connections from this client address
    BAD_REQUEST = 4400  # the connection's URL asks for something we do not speak
    UNAUTHORIZED = 4401  # ingest without a valid token


class FrameKind(StrEnum):
    """What one frame of a push is: a topic's reset, or a bar (closed: final; open: the
    bar still forming). A v1 client gets each spliced behind its subscription id."""

    RESET = "reset"
    CLOSED = "closed"
    OPEN = "open"
