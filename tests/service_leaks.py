"""Shared by the service tests: every answer with status >= 400 is checked for absolute server paths.

``leaks`` (a fixture) wraps apps with an ASGI recorder (``leaks.wrap(app)``); at the end of the test it
asserts that no recorded error body holds the test's temporary folder, its first path component
(``/tmp/``) or the home folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest


class PathLeakCheck:
    def __init__(self, *bases: Path):
        self.needles: set[str] = set()
        for base in bases:
            base = Path(base).resolve()
            self.needles |= {str(base), "/" + base.parts[1] + "/"}
        if str(Path.home()) not in ("/", ""):
            self.needles.add(str(Path.home()))
        self.bodies: list[tuple[int, str, str]] = []

    def record(self, status: int, url: str, body: bytes) -> None:
        if status >= 400:
            self.bodies.append((status, url, body.decode("utf-8", "replace")))

    def wrap(self, app):
        """An ASGI wrapper recording every answer's status and body."""

        async def recorder(scope, receive, send):
            if scope["type"] != "http":
                return await app(scope, receive, send)
            state = {"status": 0, "body": b""}

            async def tap(message):
                if message["type"] == "http.response.start":
                    state["status"] = message["status"]
                elif message["type"] == "http.response.body":
                    state["body"] += message.get("body", b"")
                await send(message)

            try:
                await app(scope, receive, tap)
            finally:
                self.record(state["status"], scope.get("path", ""), state["body"])

        recorder.state = getattr(app, "state", None)
        return recorder

    def assert_clean(self) -> None:
        for status, url, body in self.bodies:
            for needle in self.needles:
                assert needle not in body, f"{status} answer to {url} holds a server path: {body[:300]}"


@pytest.fixture()
def leaks(tmp_path, tmp_path_factory):
    check = PathLeakCheck(tmp_path, tmp_path_factory.getbasetemp())
    yield check
    check.assert_clean()
