"""The fan-out writes WebSocket frames itself (service/api/wsproto.py): they must be the
bytes the WebSocket library would have written, at every length boundary."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode

from service.api.wsproto import text_frame


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70_000])
def test_text_frames_are_the_library_s_own(size):
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    assert text_frame(payload) == Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])
