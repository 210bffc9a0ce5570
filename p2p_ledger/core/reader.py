"""One bounds-checked reader for every binary format a peer or a file hands us.

The wire codec (``wire.py``), Merkle proofs (``merkle.py``), snapshot files (``snapshot.py``) and
bundles (``bundle.py``) read untrusted bytes through ``Reader``: a short read raises the format's
own error (who is at fault differs: a peer's frame, a peer's proof, a file) naming what was being
read, never an IndexError or struct.error. Integers are big-endian, as in all four formats.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

_U16 = struct.Struct(">H").unpack_from
_U32 = struct.Struct(">I").unpack_from
_U64 = struct.Struct(">Q").unpack_from


class Reader:
    """A cursor over ``data``; ``fault(message)`` builds the error every short read raises."""

    __slots__ = ("data", "fault", "pos", "what")

    def __init__(self, data: bytes, fault: Callable[[str], Exception], what: str,
                 pos: int = 0) -> None:
        self.data = data
        self.fault = fault
        self.what = what
        self.pos = pos

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise self.fault(f"truncated {self.what}: wanted {n} bytes at {self.pos}")
        out, self.pos = self.data[self.pos:end], end
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int(_U16(self.take(2))[0])

    def u32(self) -> int:
        return int(_U32(self.take(4))[0])

    def u64(self) -> int:
        return int(_U64(self.take(8))[0])
