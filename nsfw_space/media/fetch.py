"""Fetching an image URL safely: http(s) only, public addresses only, size and time limits.

Every hop (the URL and each redirect) is resolved once, each resolved address is checked, and the
connection goes to that checked address (the host name is kept for the Host header and TLS), so
a name that resolves to a private address, or changes its answer between check and use (DNS
rebinding), cannot reach this machine's network.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import socket
import time
from urllib.parse import urljoin, urlsplit, urlunsplit

from nsfw_space.errors import InvalidImageError

logger = logging.getLogger(__name__)

MAX_REDIRECTS = 3


@functools.cache
def shared_tls_context():
    """One TLS context (certifi's CA bundle, as httpx builds its default) for every connection.

    httpx builds a new one for each client, even for an http:// URL, and reading the CA bundle
    takes about 20 ms of CPU (measured on the 2-core EPYC of docs/speed.md), which here was
    the whole cost of fetching a 1024x768 JPEG from a local server (docs/api.md shows callers
    the same for gradio_client)."""
    import httpx

    return httpx.create_ssl_context(trust_env=False)


def fetch_image_bytes(
    url: str, *, max_bytes: int, timeout: float = 10.0, allow_private: bool = False
) -> bytes:
    """Download ``url`` (at most ``max_bytes``) or raise InvalidImageError saying why not.

    ``timeout`` is one deadline for the whole fetch (every redirect, the headers and the body),
    checked as each chunk arrives, so a server that drips a byte at a time is cut off; a read
    that stalls completely ends within the time that was left when it began.
    """
    import httpx

    if not isinstance(url, str):
        raise InvalidImageError("The URL must be text, like https://example.com/photo.jpg.")
    url = url.strip()
    deadline = time.monotonic() + timeout
    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidImageError("Only http:// and https:// image URLs are accepted.")
        address = _checked_address(
            parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), allow_private
        )
        host_header = parts.netloc.rsplit("@", 1)[-1]
        literal = f"[{address}]" if ":" in address else address
        target = urlunsplit(
            (
                parts.scheme,
                f"{literal}:{parts.port or (443 if parts.scheme == 'https' else 80)}",
                parts.path or "/",
                parts.query,
                "",
            )
        )
        extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise InvalidImageError(_too_slow(timeout))
        try:
            with httpx.Client(
                timeout=remaining, follow_redirects=False, trust_env=False, verify=shared_tls_context()
            ) as client:
                request = client.build_request(
                    "GET",
                    target,
                    headers={"Host": host_header, "User-Agent": "nsfw-space"},
                    extensions=extensions,
                )
                response = client.send(request, stream=True)
                try:
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    if response.status_code != 200:
                        raise InvalidImageError(
                            f"The URL answered HTTP {response.status_code}, not an image."
                        )
                    declared = response.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > max_bytes:
                        raise InvalidImageError(_too_big(int(declared), max_bytes))
                    body = bytearray()
                    for chunk in response.iter_bytes():
                        body.extend(chunk)
                        if len(body) > max_bytes:
                            raise InvalidImageError(_too_big(len(body), max_bytes))
                        if time.monotonic() > deadline:
                            raise InvalidImageError(_too_slow(timeout))
                    return bytes(body)
                finally:
                    response.close()
        except httpx.TimeoutException:
            raise InvalidImageError(_too_slow(timeout)) from None
        except httpx.HTTPError as err:
            raise InvalidImageError(f"The URL could not be fetched ({type(err).__name__}).") from None
    raise InvalidImageError(f"The URL redirected more than {MAX_REDIRECTS} times.")


def _checked_address(host: str, port: int, allow_private: bool) -> str:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise InvalidImageError(f"The host {host!r} could not be found.") from None
    addresses = [info[4][0] for info in infos]
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if not allow_private and not ip.is_global:
            raise InvalidImageError(
                "That URL points to a private, loopback or link-local address; only public addresses are fetched."
            )
    return addresses[0].split("%", 1)[0]


def _too_slow(timeout: float) -> str:
    return (
        f"The URL did not answer within {timeout:g} seconds. Try again later, or use the image file itself."
    )


def _too_big(size: int, limit: int) -> str:
    return f"The image at that URL is {size / 2**20:.1f} MB; the limit is {limit / 2**20:.0f} MB."
