"""Settings, read once from ``NSFW_SPACE_*`` environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

from nsfw_space.errors import ConfigError
from nsfw_space.media.budgets import DecodeLimits
from nsfw_space.modes import Optimization, Precision

DEFAULT_MODEL = "Falconsai/nsfw_image_detection"
DEFAULT_HEAT_LEVEL = 0.5  # explanations: blur where the heat is at least this share of the peak
ENV_PREFIX = "NSFW_SPACE_"


@dataclass(frozen=True)
class Settings:
    """Everything that can be configured, with the defaults a public CPU Space wants.

    Each field ``name`` is read from the environment variable ``NSFW_SPACE_<NAME>``.
    """

    model: str = DEFAULT_MODEL
    """Hub id or local directory of a transformers image-classification model."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) to pin; ignored for local directories."""
    device: str = "auto"
    """``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda``, ``cuda:1``, ..."""
    precision: str = "auto"
    """``auto`` (on the CPU: int8 where it was measured faster, built in the background and cached;
    else bf16 on CPUs with bf16 matrix units, fp32 elsewhere; fp16 on a GPU), ``fp32``, ``bf16``,
    ``fp16`` or ``int8`` (CPU only)."""
    optimize: str = "auto"
    """``auto`` (TorchScript + oneDNN fusion on the CPU, plain on a GPU), ``none`` (also: no int8
    build for ``precision=auto``), ``jit``, ``compile``."""
    cache_dir: str = ""
    """Where built int8 packages are kept (empty: ``$XDG_CACHE_HOME/nsfw_space``, else
    ``~/.cache/nsfw_space``); on a Space, a folder of persistent storage keeps them over restarts."""
    int8_retry: bool = False
    """Build int8 again even where an earlier build under the same cache key was refused or
    failed (its reason is kept in the cache, and a start does not repeat it otherwise)."""
    private_mode: bool = True
    """The "On this device" tab: the model exported to ONNX (8-bit) and run in the visitor's browser
    by transformers.js, so the image is never uploaded. Built aside in a child process once per
    model (cached like int8); the JavaScript and WASM are fetched once from the npm registry."""
    web_runtime: str = ""
    """A folder that already holds the browser runtime's files (see docs/private.md); empty: they
    are fetched once from the npm registry at pinned versions, checked against their sha512."""
    desk_db: str = ""
    """The moderation desk's database, an SQLAlchemy URL (``sqlite:////data/desk.db`` for one
    person, ``postgresql+psycopg://user:pass@host/db`` for a team). Empty (the default): no desk,
    nothing is stored, answers are as without it."""
    desk_retention_days: float = 30.0
    """Days a queued image is kept, reviewed or not; then it is deleted from the database."""
    desk_audit: float = 0.0
    """Share (0 to 1) of automatically allowed images sent to the queue as a random audit."""
    desk_moderators: str = ""
    """Hugging Face users or organisations (comma-separated) who may sign in to the Review tab
    with "Sign in with Hugging Face" on a Space whose README sets ``hf_oauth: true``. Password
    moderators are added with ``python -m nsfw_space desk add-moderator`` (both can be used)."""
    desk_lease_seconds: float = 300.0
    """How long a moderator holds an item before it returns to the queue undecided."""
    nsfw_labels: str = ""
    """Comma-separated label names that count as NSFW; empty means found by name."""
    threshold: float = 0.5
    """Default NSFW score at or above which an image is flagged (``block``)."""
    policy: str = ""
    """A policy JSON file (block and review thresholds, see ``eval``); its block threshold then
    replaces ``threshold``. Empty: the single threshold, nothing sent to review."""
    batch_size: int = 16
    """Images per forward pass in batch scoring."""
    max_batch_size: int = 8
    """Most concurrent Space requests that share one forward pass."""
    max_file_size: str = "25MB"
    """Largest upload the Space accepts (Gradio's ``max_file_size``)."""
    max_pixels: int = 80_000_000
    """Largest image or frame (width x height): checked from the header, and again after each
    frame is read (a GIF frame can grow the canvas, a video can change size mid-stream)."""
    max_animation_frames: int = 1000
    """Frames of an animated image looked at; frames after these are not read."""
    max_animation_pixels: int = 24_000_000
    """Largest frame of an animated image (a later GIF frame costs Pillow about 9 bytes a pixel)."""
    decode_seconds: float = 15.0
    """Decoding time one file may take before it is refused."""
    max_request_pixels: int = 400_000_000
    """Decoded pixels one request may spend (a single image, or all files of a batch together)."""
    max_decode_pixels: int = 100_000_000
    """Full-size decoded pixels the whole server holds at once; larger decodes wait their turn."""
    queue_size: int = 64
    """Requests waiting in the Space's queue before new ones are refused as busy."""
    concurrency: int = 4
    """Requests the Space works on at once (decoding in parallel, model passes shared)."""
    cache_minutes: int = 10
    """Uploaded files are deleted from the server after about this many minutes."""
    max_batch_files: int = 100
    """Most files (uploads and URL lines together) one batch request may hold."""
    max_calibration_files: int = 1000
    """Most labelled images the Calibrate tab scores at once (boxes and zip together)."""
    max_batch_download: str = "200MB"
    """Most bytes one batch request may download from its URLs, all together."""
    frames: int = 8
    """Frames sampled from an animated image or a video."""
    allow_urls: bool = True
    """Whether the API accepts http(s) image URLs."""
    allow_private_urls: bool = False
    """Test-only: allow URLs that resolve to loopback or private addresses."""
    url_timeout: float = 10.0
    """Seconds allowed to fetch an image URL, from connecting to the last byte (redirects included)."""
    mcp: bool = False
    """Also serve the API as MCP tools through Gradio's MCP server."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``); ``overrides`` win over both."""
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for field in fields(cls):
            raw = environ.get(ENV_PREFIX + field.name.upper())
            if raw is None or raw.strip() == "":
                continue
            values[field.name] = _parse(field.name, field.type, raw.strip())
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError for values that cannot work."""
        for name in (
            "threshold",
            "decode_seconds",
            "url_timeout",
            "desk_retention_days",
            "desk_audit",
            "desk_lease_seconds",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                raise ConfigError(f"NSFW_SPACE_{name.upper()} must be a number, got {value!r}.")
        if self.decode_seconds <= 0 or self.url_timeout <= 0:
            raise ConfigError("NSFW_SPACE_DECODE_SECONDS and NSFW_SPACE_URL_TIMEOUT must be above 0.")
        if not 0.0 <= self.desk_audit <= 1.0:
            raise ConfigError(
                f"NSFW_SPACE_DESK_AUDIT must be a share between 0 and 1, got {self.desk_audit}."
            )
        if self.desk_retention_days <= 0 or self.desk_lease_seconds <= 0:
            raise ConfigError(
                "NSFW_SPACE_DESK_RETENTION_DAYS and NSFW_SPACE_DESK_LEASE_SECONDS must be above 0."
            )
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"NSFW_SPACE_THRESHOLD must be between 0 and 1, got {self.threshold}.")
        for name in (
            "batch_size",
            "max_batch_size",
            "max_pixels",
            "queue_size",
            "concurrency",
            "frames",
            "max_batch_files",
            "max_calibration_files",
            "max_animation_frames",
            "max_animation_pixels",
            "max_request_pixels",
            "max_decode_pixels",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"NSFW_SPACE_{name.upper()} must be at least 1.")
        if self.optimize not in Optimization.values():
            raise ConfigError(
                f"NSFW_SPACE_OPTIMIZE must be auto, none, jit or compile, got {self.optimize!r}."
            )
        if self.precision not in Precision.values():
            raise ConfigError(
                f"NSFW_SPACE_PRECISION must be one of {', '.join(Precision.values())}, got {self.precision!r}."
            )

    @property
    def nsfw_label_list(self) -> list[str]:
        return [name.strip() for name in self.nsfw_labels.split(",") if name.strip()]

    @property
    def max_file_bytes(self) -> int:
        return parse_size(self.max_file_size)

    @property
    def max_batch_download_bytes(self) -> int:
        return parse_size(self.max_batch_download)

    @property
    def decode_limits(self) -> DecodeLimits:
        """What one file may cost to decode, as these settings say."""
        return DecodeLimits(
            max_pixels=self.max_pixels,
            max_bytes=self.max_file_bytes,
            max_animation_frames=self.max_animation_frames,
            max_animation_pixels=self.max_animation_pixels,
            seconds=self.decode_seconds,
        )


def parse_size(text: str) -> int:
    """``'25MB'`` -> bytes, read as Gradio reads ``max_file_size`` (1 MB = 1024 KB; plain numbers are bytes)."""
    units = {"kb": 1024, "mb": 1024**2, "gb": 1024**3, "b": 1}
    cleaned = text.strip().lower().replace(" ", "")
    unit = next((name for name in units if cleaned.endswith(name)), "")
    number, factor = (cleaned[: -len(unit)], units[unit]) if unit else (cleaned, 1)
    try:
        return int(float(number) * factor)
    except ValueError as err:
        raise ConfigError(f"Cannot read {text!r} as a size; write it like '25MB'.") from err


def _parse(name: str, annotation: object, raw: str) -> object:
    kind = str(annotation)
    env_name = ENV_PREFIX + name.upper()
    try:
        if kind.startswith("bool"):
            lowered = raw.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind.startswith("int"):
            return int(raw.replace("_", ""))
        if kind.startswith("float"):
            return float(raw)
    except ValueError as err:
        raise ConfigError(f"{env_name}={raw!r} is not a valid {kind.split(' ')[0]}.") from err
    return raw
