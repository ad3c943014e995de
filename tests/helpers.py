"""Helpers shared by test modules: raw HTTP calls, hostile files, a Space in its own process."""

from __future__ import annotations

import io
import json
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


# --- the plain HTTP API, as curl would use it ---------------------------------------------------
def upload(base_url: str, path: Path | str, timeout: float = 60) -> dict[str, Any]:
    """POST a file to /gradio_api/upload; returns the FileData dict to send in a call."""
    with open(path, "rb") as handle:
        response = httpx.post(f"{base_url}gradio_api/upload", files={"files": handle}, timeout=timeout)
    response.raise_for_status()
    server_path = response.json()[0]
    return {"path": server_path, "orig_name": Path(path).name, "meta": {"_type": "gradio.FileData"}}


# what each endpoint takes after its file, so a plain HTTP call can send every input (Gradio asks for all)
AFTER_FILE = {"classify": [], "moderate": [0.5, None], "moderate_frames": [0.5, "max", 2, 8]}


def call_with_file(base_url: str, api_name: str, file: Any, timeout: float = 120) -> tuple[str, Any]:
    """``raw_call`` with ``file`` first and the endpoint's defaults after it."""
    return raw_call(base_url, api_name, [file, *AFTER_FILE[api_name]], timeout=timeout)


def raw_call(base_url: str, api_name: str, data: list[Any], timeout: float = 120) -> tuple[str, Any]:
    """POST /gradio_api/call/<name> and read its event stream: ("complete", outputs),
    ("error", message), or ("http 413", text) when the server refuses the request itself."""
    started = httpx.post(f"{base_url}gradio_api/call/{api_name}", json={"data": data}, timeout=timeout)
    if started.status_code >= 400:
        return f"http {started.status_code}", started.text
    event_id = started.json()["event_id"]
    stream = httpx.get(f"{base_url}gradio_api/call/{api_name}/{event_id}", timeout=timeout).text
    event, payload = "", None
    for line in stream.splitlines():
        if line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:") and event in ("complete", "error"):
            text = line.split(":", 1)[1].strip()
            try:
                payload = json.loads(text)
            except ValueError:
                payload = text
    if event == "error" and isinstance(payload, dict):
        payload = payload.get("error") or json.dumps(payload)
    return event, payload


@contextmanager
def launched(classifier: Any, settings: Any) -> Iterator[str]:
    """The Space built around ``classifier`` with ``settings``, on 127.0.0.1; yields its URL."""
    from nsfw_space.space.demo import create_demo, launch_options

    demo = create_demo(classifier, settings)
    _, url, _ = demo.launch(
        prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, **launch_options(settings)
    )
    try:
        yield url
    finally:
        demo.close()


# --- hostile files --------------------------------------------------------------------------
def growing_gif(offset: int = 9000) -> bytes:
    """A 100x100 GIF whose second frame is 1x1 at (offset, offset): Pillow grows the canvas to
    (offset + 1) squared when it reaches that frame."""
    first = Image.new("P", (100, 100), 0)
    first.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    second = first.copy()
    second.putpixel((99, 99), 1)
    buffer = io.BytesIO()
    first.save(buffer, "GIF", save_all=True, append_images=[second], duration=100, loop=0)
    data = buffer.getvalue()
    needle = b"\x2c" + struct.pack("<HHHH", 99, 99, 1, 1)
    assert data.count(needle) == 1
    return data.replace(needle, b"\x2c" + struct.pack("<HHHH", offset, offset, 1, 1))


def many_frame_gif(frames: int) -> bytes:
    """A GIF of ``frames`` 1x1 frames (about 23 bytes each), made by repeating one frame's bytes."""
    images = [Image.new("P", (1, 1), i % 2) for i in range(3)]
    for image in images:
        image.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    buffer = io.BytesIO()
    images[0].save(buffer, "GIF", save_all=True, append_images=images[1:], duration=20, loop=0)
    data = buffer.getvalue()
    starts = [i for i in range(len(data)) if data.startswith(b"\x21\xf9\x04", i)]
    head, block = data[: starts[1]], data[starts[1] : starts[2]]
    return head + block * (frames - 1) + b"\x3b"


def big_png(path: Path, side: int) -> Path:
    """A flat side x side PNG: tiny on disk, side squared pixels decoded."""
    Image.new("RGB", (side, side), (120, 40, 200)).save(path, optimize=False, compress_level=1)
    return path


def big_gif(path: Path, side: int, frames: int) -> Path:
    """A side x side palette GIF of ``frames`` frames with a moving square (small on disk)."""
    images = []
    for index in range(frames):
        image = Image.new("P", (side, side), 0)
        image.putpalette([0, 0, 0, 255, 255, 255, 200, 30, 30] + [0] * 759)
        image.paste(1 + index % 2, (index * 97 % side, 0, index * 97 % side + 64, 64))
        images.append(image)
    images[0].save(path, save_all=True, append_images=images[1:], duration=100, loop=0, optimize=False)
    return path


def size_changing_video(path: Path, small: int = 64, large: int = 9000) -> Path:
    """An MJPEG Matroska video whose first frames are small x small and later ones large x large
    (each MJPEG frame carries its own size, as keyframes of a resized stream do)."""
    import av

    def encoded(side: int, count: int) -> list[Any]:
        codec = av.CodecContext.create("mjpeg", "w")
        codec.width = codec.height = side
        codec.pix_fmt = "yuvj420p"
        codec.time_base = Fraction(1, 10)
        packets = []
        frame = av.VideoFrame.from_image(Image.new("RGB", (side, side), (90, 90, 90)))
        for index in range(count):
            frame.pts = index
            packets.extend(codec.encode(frame))
        packets.extend(codec.encode(None))
        return packets

    with av.open(str(path), mode="w", format="matroska") as container:
        stream = container.add_stream("mjpeg", rate=10)
        stream.width = stream.height = small
        stream.pix_fmt = "yuvj420p"
        packets = encoded(small, 4) + encoded(large, 4)
        for index, packet in enumerate(packets):
            packet.stream = stream
            packet.pts = packet.dts = index
            container.mux(packet)
    return path


# --- a Space in its own process, for memory readings ------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(model_dir: Path, tmp_dir: Path, **settings: str) -> tuple[subprocess.Popen, str]:
    """``python app.py`` on a free loopback port with NSFW_SPACE_* ``settings``; waits until ready."""
    port = free_port()
    env = {
        **os.environ,
        "NSFW_SPACE_MODEL": str(model_dir),
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_TEMP_DIR": str(tmp_dir),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        **{f"NSFW_SPACE_{key.upper()}": str(value) for key, value in settings.items()},
    }
    log = open(tmp_dir / "app.log", "wb")  # noqa: SIM115 - the server writes to it while it runs
    process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=log)
    process.log_path = tmp_dir / "app.log"  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"app.py exited: {(tmp_dir / 'app.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}gradio_api/info", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    process.kill()
    raise RuntimeError("app.py did not become ready within 120 s")


def memory_mb(pid: int, field: str) -> float:
    """``VmRSS`` or ``VmHWM`` (peak resident memory) of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def reset_peak(pid: int) -> None:
    """Start a new ``VmHWM`` measurement from the current resident size (Linux clear_refs)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
