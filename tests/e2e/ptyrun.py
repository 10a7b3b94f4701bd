"""Run a command on a pseudo-terminal, as a person at a terminal would:
``python -m tests.e2e.ptyrun COMMAND ARGS...``.

The command's terminal output is copied to our standard output as it comes; SIGINT and
SIGTERM are passed on to the command (so a test's Ctrl-C stops it cleanly); the exit code
is the command's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys


def main(argv: list[str]) -> int:
    leader, follower = os.openpty()
    env = {**os.environ, "TERM": os.environ.get("TERM", "xterm") or "xterm"}
    if env["TERM"] == "dumb":
        env["TERM"] = "xterm"
    child = subprocess.Popen(argv, stdin=follower, stdout=follower, stderr=follower, env=env)
    os.close(follower)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: child.send_signal(signum))
    out = sys.stdout.buffer
    while True:
        try:
            data = os.read(leader, 65536)
        except InterruptedError:
            continue
        except OSError:  # EIO: every writer of the terminal has closed it
            break
        if not data:
            break
        out.write(data)
        out.flush()
    return child.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
