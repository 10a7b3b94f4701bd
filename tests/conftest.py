"""Session-wide set-up for the whole suite."""

from __future__ import annotations

import signal

# A test run started in the background of a script (`make test &`, nohup, some CI runners)
# inherits SIGINT ignored, and an ignored signal stays ignored across exec: every process a
# test starts would then shrug off the Ctrl-C the test sends it to stop (`ambient logs -f`,
# `ambient up`), and the test would hang until its timeout. A handled signal is reset to the
# default at exec, so handling it here gives every child the SIGINT a terminal would.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
