"""A cap on HTTP request bodies, enforced before anything parses them.

Gradio limits uploads (``max_file_size``) but not the JSON body of an API call, and it keeps the
last requests of its worker threads alive after they are answered: one 54 MB ``data:`` URL in a
JSON body cost about 216 MB of resident memory here until the next request replaced it. This
ASGI middleware refuses any body (other than an upload, which Gradio limits itself) larger than
a ``data:`` URL of the largest allowed file needs, with ``413`` and one sentence, whether the
client declares its length or streams it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

UPLOAD_PATH_END = "/upload"
SLACK_BYTES = 1 << 20  # JSON around the data: URL, and the other inputs


def body_limit_for(max_file_bytes: int) -> int:
    """The largest body a call needs: a base64 data: URL of the largest file, plus the JSON around it."""
    return max_file_bytes * 4 // 3 + SLACK_BYTES


class BodyLimit:
    """Pure ASGI middleware: ``413`` for request bodies over ``max_bytes`` (uploads excepted)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path", "").rstrip("/").endswith(UPLOAD_PATH_END):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit():
            if int(declared) > self.max_bytes:
                await self._refuse(send)
                return
            await self.app(scope, receive, send)  # the server never delivers more than declared
            return
        # No declared length (a streamed body): read it here, up to the cap, then hand it on.
        messages: list[Message] = []
        received = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                await self._refuse(send)
                return
            if not message.get("more_body", False):
                break
        buffered = iter(messages)

        async def replay() -> Message:
            return next(buffered, None) or await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        text = (
            f"The request is larger than {self.max_bytes / 2**20:.0f} MB, the most a call needs. "
            "Upload large files (gradio_client handle_file, or POST /gradio_api/upload) instead of "
            "sending them inside the request."
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(text)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": text})
