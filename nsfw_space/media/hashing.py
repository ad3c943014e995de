"""Perceptual hashes of decoded images: Meta's PDQ (256 bits, the hash ThreatExchange and the
Hasher-Matcher-Actioner exchange), through the ``pdqhash`` bindings of its reference C++.

A hash is 64 lowercase hex digits; its first hex digit holds the first four bits of the vector.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from nsfw_space.errors import DeskError

HASH_SIZE = 256  # larger images are reduced first (PDQ itself works on a 64x64 reduction): 1 ms, not 10
HEX_DIGITS = 64
MIN_QUALITY = 50  # ThreatExchange's rule: hashes of lower quality (flat images) are not matched


@dataclass(frozen=True)
class PdqHash:
    """An image's PDQ hash, its quality (0 to 100), and the hashes of its 8 rotations and flips
    (the first is the image's own)."""

    hex: str
    quality: int
    dihedral: tuple[str, ...]

    @property
    def usable(self) -> bool:
        """Whether the hash is good enough to match (quality at least 50)."""
        return self.quality >= MIN_QUALITY


def pdq_hash(image: Image.Image) -> PdqHash:
    """The PDQ hash of an RGB image, with its dihedral variants. Raises DeskError without pdqhash."""
    try:
        import pdqhash
    except ImportError as err:
        raise DeskError(
            "Known-image lists need the pdqhash package: pip install 'nsfw-space[desk]'."
        ) from err
    picture = image.convert("RGB")
    if max(picture.size) > HASH_SIZE:
        picture = picture.copy()
        picture.thumbnail((HASH_SIZE, HASH_SIZE), Image.Resampling.BILINEAR)
    vectors, quality = pdqhash.compute_dihedral(np.ascontiguousarray(np.asarray(picture)))
    hexes = tuple(vector_to_hex(vector) for vector in vectors)
    return PdqHash(hex=hexes[0], quality=int(quality), dihedral=hexes)


def vector_to_hex(vector: np.ndarray) -> str:
    """256 bits (0/1 values) -> 64 hex digits, first bit first."""
    return np.packbits(np.asarray(vector, dtype=np.uint8) > 0).tobytes().hex()


def normalized_hex(text: str) -> str:
    """A PDQ hash as written in a list file -> 64 lowercase hex digits. Raises DeskError."""
    value = text.strip().lower()
    if len(value) != HEX_DIGITS or any(c not in "0123456789abcdef" for c in value):
        raise DeskError(f"{text.strip()[:80]!r} is not a PDQ hash (64 hex digits).")
    return value


def hex_to_columns(hexes: list[str]) -> np.ndarray:
    """Hashes -> a (4, n) uint64 array: each 64-bit word of every hash in one contiguous row, so
    a Hamming distance to all of them is four vectorised XOR-popcounts."""
    if not hexes:
        return np.zeros((4, 0), dtype=np.uint64)
    raw = np.frombuffer(bytes.fromhex("".join(hexes)), dtype=">u8").astype(np.uint64)
    return np.ascontiguousarray(raw.reshape(len(hexes), 4).T)


def nearest_distances(columns: np.ndarray, queries: list[str]) -> np.ndarray:
    """For each stored hash (a column of ``columns``), its smallest Hamming distance to any of
    ``queries`` (an image's dihedral hashes)."""
    best = np.full(columns.shape[1], 257, dtype=np.uint16)
    for query in hex_to_columns(queries).T:
        distance = np.bitwise_count(columns[0] ^ query[0]).astype(np.uint16)
        for word in range(1, 4):
            distance += np.bitwise_count(columns[word] ^ query[word])
        np.minimum(best, distance, out=best)
    return best
