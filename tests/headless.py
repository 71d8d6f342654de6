"""A headless chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
JSON messages ending in a NUL byte, commands on the child's fd 3, replies on its fd 4), so a test
can wait for what the page says before it looks, instead of guessing a time budget: under load a
fixed budget ends before the tiles are drawn."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import subprocess
import time


def _above_nine(fd: int) -> int:
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    os.set_inheritable(moved, True)
    return moved


class Browser:
    def __init__(self, url: str, *, width: int = 900, height: int = 700):
        to_child, self._commands = os.pipe()
        self._replies, from_child = os.pipe()
        # Moved above 9 so that wiring them to 3 and 4 can never close one of them.
        to_child, from_child = (_above_nine(fd) for fd in (to_child, from_child))
        # The child finds the pipe ends at fds 3 and 4, where chromium looks for them (bash: dash
        # redirects single-digit fds only).
        wiring = f"exec 3<&{to_child} 4>&{from_child} {to_child}<&- {from_child}>&-; exec \"$@\""
        self._process = subprocess.Popen(
            ["bash", "-c", wiring, "chromium", "chromium", "--headless=new", "--no-sandbox", "--disable-gpu",
             "--hide-scrollbars", f"--window-size={width},{height}", "--remote-debugging-pipe", url],
            pass_fds=(to_child, from_child), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(to_child)
        os.close(from_child)
        self._buffer = b""
        self._next_id = 0
        deadline = time.monotonic() + 60
        while not (pages := [t for t in self._call("Target.getTargets")["targetInfos"] if t["type"] == "page"]):
            if time.monotonic() > deadline:
                raise TimeoutError(f"chromium opened no page for {url}")
            time.sleep(0.1)
        self._session = self._call("Target.attachToTarget", targetId=pages[0]["targetId"], flatten=True)["sessionId"]

    def _call(self, method: str, session: str | None = None, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._replies, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"chromium closed its pipe during {method}")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._next_id:  # events in between are not ours to read
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def evaluate(self, expression: str):
        reply = self._call("Runtime.evaluate", self._session, expression=expression, returnByValue=True)
        return reply["result"].get("value")

    def wait_for(self, expression: str, *, timeout: float = 90.0):
        """The value of ``expression`` once it is truthy; raises after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not (value := self.evaluate(expression)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the page never made {expression!r} true in {timeout:.0f} s")
            time.sleep(0.2)
        return value

    def screenshot(self) -> bytes:
        return base64.b64decode(self._call("Page.captureScreenshot", self._session, format="png")["data"])

    def close(self) -> None:
        try:
            self._call("Browser.close")
        except (RuntimeError, OSError):
            pass
        try:
            self._process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        os.close(self._commands)
        os.close(self._replies)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
