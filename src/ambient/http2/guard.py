"""Per-connection budgets against HTTP/2 abuse, judged from frame headers (sans-io).

An HTTP/2 peer can make us work without doing any itself: open a stream and
reset it at once (the "rapid reset", CVE-2023-44487), ask for a reply with
every frame (PING and SETTINGS floods), send frames that do nothing, or grow a
header block without end (the CONTINUATION flood). Pure-Python HTTP/2 costs
microseconds per frame where an attacker's costs nanoseconds, so each of these
has a budget per connection; a peer that overdraws one gets GOAWAY with
ENHANCE_YOUR_CALM and the connection is closed, as Go, nghttp2 and Envoy do.

Budgets are token buckets (a burst, then a steady refill per second):

- *early resets*: streams the peer resets before we answered them (server
  side; the work they started is cancelled). nghttp2's stream-reset rate limit
  (1,000 then 33/s) is the model; Envoy closes a connection whose streams were
  mostly reset within a second of opening, Go bounds the handlers queued.
- *control frames*: PING and SETTINGS without ACK, each of which makes us
  queue a reply. None of Go, nghttp2 or Envoy needs a rate here (they bound the
  replies queued instead), but their per-frame cost is a hundred times lower;
  the budget (1,000 then 100/s) is far above what a legitimate peer sends
  (our keep-alive: one PING in 10 s; gRPC's BDP pings stop once the window
  is grown).
- *idle frames*: frames that do nothing for anyone - PRIORITY, extension
  frame types, empty DATA without END_STREAM, PING and SETTINGS
  acknowledgements (we ask for one every few seconds). Envoy allows one empty
  frame in a row and a hundred PRIORITY frames per stream.

WINDOW_UPDATE is not budgeted: legitimate peers send one per read of a
stream, at a rate that depends on their buffers, and it costs no reply.

The header block (HEADERS plus its CONTINUATION frames) may not exceed the
header list size we advertise plus ``HEADER_BLOCK_SLACK`` (a HEADERS frame's
own padding and priority bytes): HPACK never encodes a field in more bytes
than it counts in the header list size (32 per field plus name and value), so
a block over the bound can only be an attack, and it is refused on the frame
header, before any of it is buffered.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

# Frame types (RFC 9113 section 6) and flags.
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 8, 9
_KNOWN_TYPES = 10
ACK = 0x1
END_STREAM = 0x1
END_HEADERS = 0x4

FRAME_SIZE_ERROR = 0x6
ENHANCE_YOUR_CALM = 0xB
HEADER_BLOCK_SLACK = (
    256 + 5
)  # a HEADERS frame's padding (at most 255 + its length byte) and priority
FRAME_HEADER = 9
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@dataclass(frozen=True, slots=True)
class FloodLimits:
    """Per-connection budgets (a burst, then a refill per second); see the module docstring."""

    early_reset_burst: int = 1000
    early_reset_rate: float = 33.0
    control_burst: int = 1000
    control_rate: float = 100.0
    idle_burst: int = 1000
    idle_rate: float = 100.0


DEFAULT_LIMITS = FloodLimits()


class Abuse(Exception):
    """The peer overdrew a budget: answer GOAWAY with ``error_code`` and close."""

    def __init__(self, message: str, error_code: int = ENHANCE_YOUR_CALM) -> None:
        super().__init__(message)
        self.error_code = error_code


class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second; :meth:`take` spends one."""

    __slots__ = ("_clock", "_stamp", "_tokens", "burst", "rate")

    def __init__(self, burst: int, rate: float, clock: Callable[[], float]) -> None:
        self.burst = burst
        self.rate = rate
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()

    def take(self) -> bool:
        """Spend one token; False when none is left."""
        now = self._clock()
        tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True


class FloodGuard:
    """The budgets of one HTTP/2 connection, fed with the frame headers the peer sends."""

    __slots__ = ("_block", "_control", "_early", "_idle", "_scan_head", "_scan_skip",
                 "max_frame_size", "max_header_block")  # fmt: skip

    def __init__(
        self,
        limits: FloodLimits,
        max_header_list_size: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        preface: bool = False,
        max_frame_size: int | None = None,
    ) -> None:
        """``preface``: :meth:`scan` starts with the client connection preface (server side);
        ``max_frame_size``: refuse larger frames on their header (FRAME_SIZE_ERROR), before
        a buffer waits for the whole frame."""
        self.max_frame_size = max_frame_size
        self._early = TokenBucket(limits.early_reset_burst, limits.early_reset_rate, clock)
        self._control = TokenBucket(limits.control_burst, limits.control_rate, clock)
        self._idle = TokenBucket(limits.idle_burst, limits.idle_rate, clock)
        self.max_header_block = max_header_list_size + HEADER_BLOCK_SLACK
        self._block = -1  # bytes of the header block under way; -1: none
        # scan(): bytes to skip (the preface, then each frame's payload), a partial header.
        self._scan_skip = len(PREFACE) if preface else 0
        self._scan_head = b""

    def frame(self, ftype: int, flags: int, length: int) -> None:
        """Account for one frame from its header; raises :class:`Abuse`."""
        if self.max_frame_size is not None and length > self.max_frame_size:
            raise Abuse(
                f"frame of {length} bytes exceeds the {self.max_frame_size}-byte maximum",
                FRAME_SIZE_ERROR,
            )
        if ftype == DATA:
            if length == 0 and not flags & END_STREAM and not self._idle.take():
                raise Abuse("flood of empty DATA frames")
        elif ftype in (HEADERS, CONTINUATION, PUSH_PROMISE):
            block = max(self._block, 0) + length if ftype == CONTINUATION else length
            if block > self.max_header_block:
                raise Abuse(
                    f"header block of more than {block} bytes exceeds the "
                    f"{self.max_header_block - HEADER_BLOCK_SLACK}-byte header list size we allow"
                )
            self._block = -1 if flags & END_HEADERS else block
        elif ftype in (PING, SETTINGS):
            if flags & ACK:  # an answer to ours (one every few seconds) or unasked for
                if not self._idle.take():
                    raise Abuse("flood of PING/SETTINGS acknowledgements")
            elif not self._control.take():
                raise Abuse("flood of PING/SETTINGS frames")
        elif (ftype == PRIORITY or ftype >= _KNOWN_TYPES) and not self._idle.take():
            raise Abuse("flood of PRIORITY or unknown frames")

    def early_reset(self) -> None:
        """The peer reset a stream before it was answered; raises :class:`Abuse`."""
        if not self._early.take():
            raise Abuse("too many streams reset before they were answered (rapid reset)")

    def scan(self, data: bytes | bytearray | memoryview) -> None:
        """Account for every frame header in a byte stream given in pieces (for a
        connection driven by ``h2`` alone); raises :class:`Abuse`. Keeps at most 8 bytes."""
        view = memoryview(data)
        size = len(view)
        pos = 0
        while pos < size:
            if self._scan_skip:
                step = min(self._scan_skip, size - pos)
                self._scan_skip -= step
                pos += step
                continue
            need = FRAME_HEADER - len(self._scan_head)
            if size - pos < need:
                self._scan_head += bytes(view[pos:])
                return
            head = self._scan_head + bytes(view[pos : pos + need]) if self._scan_head else None
            if head is None:
                head = bytes(view[pos : pos + FRAME_HEADER])
            self._scan_head = b""
            pos += need
            length = int.from_bytes(head[:3], "big")
            self.frame(head[3], head[4], length)
            self._scan_skip = length
