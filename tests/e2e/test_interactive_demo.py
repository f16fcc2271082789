"""`aegis demo` at a terminal: the review screen of `aegis show`, then a y/N question; answering y heals the scenario.

The demo runs as a real subprocess on a pseudo-terminal (stdin, stdout and stderr are the pty's slave end,
so it sees a TTY and asks), driven by reading what it prints and typing the answer.
"""

from __future__ import annotations

import fcntl
import os
import pathlib
import re
import select
import struct
import subprocess
import sys
import termios
import time

import pytest

pytestmark = pytest.mark.e2e

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "examples" / "incidents" / "bad-image-tag"
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-B]|\r")
QUESTION = re.compile(r"Approve the fix for storefront/deployment-web\? \[y/N\]")


class Terminal:
    """A child process on a pseudo-terminal, and everything it has printed (ANSI escapes removed)."""

    def __init__(self, args: list[str], *, columns: int = 200, rows: int = 50) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(columns), "LINES": str(rows)}
        env.pop("NO_COLOR", None)
        self.process = subprocess.Popen(
            args, stdin=slave, stdout=slave, stderr=slave, cwd=ROOT, env=env, start_new_session=True, close_fds=True
        )
        os.close(slave)
        self.raw = b""

    @property
    def text(self) -> str:
        return ANSI.sub("", self.raw.decode("utf-8", "replace"))

    def _read(self, timeout: float) -> bool:
        """Read what is available within ``timeout``; False once the child closed the terminal."""
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: every slave end is closed (the child exited)
            return False
        self.raw += chunk
        return bool(chunk)

    def expect(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = pattern.search(self.text)
            if found:
                return found
            if not self._read(0.5) and not pattern.search(self.text):
                raise AssertionError(f"the demo ended before {pattern.pattern!r}:\n{self.text[-4000:]}")
        raise AssertionError(f"no {pattern.pattern!r} within {timeout}s:\n{self.text[-4000:]}")

    def send(self, data: str) -> None:
        os.write(self.master, data.encode())

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            self._read(0.5)
        while self._read(0.1):  # what it printed last
            pass
        if self.process.poll() is None:
            raise AssertionError(f"the demo did not finish within {timeout}s:\n{self.text[-4000:]}")
        return self.process.returncode

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        os.close(self.master)


def test_demo_asks_with_the_review_screen_and_heals_on_yes() -> None:
    terminal = Terminal([sys.executable, "-m", "aegis.cli", "demo", "--incident", str(SCENARIO)])
    try:
        terminal.expect(QUESTION, timeout=120)
        before = terminal.text[: QUESTION.search(terminal.text).start()]  # type: ignore[union-attr]
        # The review screen came first: the same sections as `aegis show`.
        assert "Incident storefront/deployment-web" in before
        assert "AwaitingApproval" in before
        assert "Diagnosis" in before and "image-pull" in before, before
        # The evidence quotes the kubelet (which of its lines is there depends on how far the pull got).
        assert "nginx:1.277" in before.split("Diagnosis", 1)[1], before
        assert "cannot be pulled — the image or tag does not exist in the registry." in before  # wrapped, not cut
        assert "--- Deployment/web (live)" in before and "+++ Deployment/web (with the fix)" in before
        assert re.search(r"^\s+-\s+- image: nginx:1\.277$", before, re.M), before
        assert re.search(r"^\s+\+\s+- image: nginx:1\.27$", before, re.M), before
        assert "Shadow verification" in before and "baseline reproduced the failure: yes" in before
        assert "candidate healthy over the stability window: yes" in before
        assert "Policy" in before and "ask — a human decides" in before
        assert "Timeline" in before and "waiting for approval" in before
        assert "aegis approve deployment-web -n storefront" in before

        terminal.send("y\r")
        code = terminal.wait(timeout=120)
        output = terminal.text
        assert code == 0, output[-4000:]
        assert "1/1 scenarios met their expected.yaml" in output
        final = output[output.rindex("AEGIS demo") :]
        assert re.search(r"bad-image-tag\s.*deployment-web\s.*image-pull\s.*Resolved\s.*met", final), final
    finally:
        terminal.close()
