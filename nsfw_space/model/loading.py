"""Loading a transformers image-classification model: hub id or local directory, safetensors only."""

from __future__ import annotations

import logging
import os
import re
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from nsfw_space.errors import ModelLoadError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

MODEL_SETTING = "NSFW_SPACE_MODEL"
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
LOCAL_HINT = (
    "Give {setting} a local directory that holds config.json, model.safetensors and "
    "preprocessor_config.json (for example one made with `hf download` or "
    "`python -m nsfw_space train`)."
)
OFFLINE_REASON = "it is not in the local cache and the Hugging Face Hub is offline or unreachable"
# Core errors speak of the argument first, then how each door (the Space, the CLI) sets it.
DEFAULT_SETTING = f"the model argument ({MODEL_SETTING} for the Space, --model for the CLI)"


def load_model_and_processor(
    model: str, *, revision: str | None = None, dtype: torch.dtype | None = None
) -> tuple[Any, Any]:
    """Load ``(model, image_processor)`` or raise ModelLoadError naming the model and the fix.

    Only safetensors weights are read and no remote code is run. A hub id is first looked up in
    the local cache; the hub itself is asked once, after a quick reachability check, so an offline
    machine fails in seconds rather than after a long retry loop. A missing directory fails before
    torch and transformers are imported.
    """
    source, local_only = locate_for_loading(model, revision)
    import torch
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    kwargs: dict[str, Any] = {"trust_remote_code": False, "local_files_only": local_only}
    if revision and not Path(source).is_dir():
        kwargs["revision"] = revision
    try:
        classifier = AutoModelForImageClassification.from_pretrained(
            source, use_safetensors=True, dtype=dtype or torch.float32, **kwargs
        )
        processor = AutoImageProcessor.from_pretrained(source, **kwargs)
    except ModelLoadError:
        raise
    except Exception as err:
        raise ModelLoadError(describe_failure(model, revision, err)) from err
    classifier.eval()
    return classifier, processor


def load_processor(model: str, *, revision: str | None = None) -> Any:
    """The model's image processor alone (no weights), or ModelLoadError as for the model."""
    source, local_only = locate_for_loading(model, revision)
    from transformers import AutoImageProcessor

    kwargs: dict[str, Any] = {"trust_remote_code": False, "local_files_only": local_only}
    if revision and not Path(source).is_dir():
        kwargs["revision"] = revision
    try:
        return AutoImageProcessor.from_pretrained(source, **kwargs)
    except Exception as err:
        raise ModelLoadError(describe_failure(model, revision, err)) from err


def locate_for_loading(model: str, revision: str | None, setting: str = DEFAULT_SETTING) -> tuple[str, bool]:
    """(what to pass to from_pretrained, local_files_only), or ModelLoadError without touching the
    network when the directory is missing or the hub is unreachable and the model is not cached."""
    source, local_only = _locate(model, revision, setting)
    if Path(source).is_dir() or _in_cache(source, {"revision": revision}):
        return source, local_only
    reason = OFFLINE_REASON if local_only else _hub_unreachable_reason()  # local_only: HF_HUB_OFFLINE
    if reason:
        raise ModelLoadError(_message(model, revision, reason, setting))
    return source, local_only


def check_model_argument(model: str, revision: str | None = None, setting: str = DEFAULT_SETTING) -> None:
    """Raise ModelLoadError now, before torch or transformers is imported, when ``model`` cannot
    load: a missing directory or one without config.json or safetensors weights, or a hub id that
    is not cached while the hub is offline or unreachable (see :func:`locate_for_loading`)."""
    locate_for_loading(model, revision, setting)


def labels_on_disk(model: str) -> list[str] | None:
    """A local model directory's labels in order, read from its config.json alone (no torch, no
    transformers); None for a hub id or a config without labels."""
    import json

    path = Path(model).expanduser() / "config.json"
    try:
        names = json.loads(path.read_text())["id2label"]
        return [str(names[str(index)]) for index in range(len(names))]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def describe_failure(
    model: str, revision: str | None, err: BaseException, setting: str = DEFAULT_SETTING
) -> str:
    """One sentence for a failed load: the model, the reason, and the setting to use instead."""
    return _message(model, revision, _reason(err), setting)


def _locate(model: str, revision: str | None, setting: str = DEFAULT_SETTING) -> tuple[str, bool]:
    path = Path(model).expanduser()
    if path.is_dir():
        missing = [name for name in ("config.json",) if not (path / name).is_file()]
        if not any(path.glob("*.safetensors")):
            if any(path.glob("*.bin")) or any(path.glob("*.pt")):
                raise ModelLoadError(
                    _message(
                        model,
                        None,
                        "it has only pickle weights (.bin); only safetensors weights are loaded",
                        setting,
                    )
                )
            missing.append("model.safetensors")
        if missing:
            raise ModelLoadError(
                _message(model, None, f"the directory has no {' or '.join(missing)}", setting)
            )
        return str(path), True
    if not HUB_ID.fullmatch(model):
        raise ModelLoadError(_message(model, None, "there is no such directory", setting))
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return model, offline


def _in_cache(source: str, kwargs: dict[str, Any]) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(source, "config.json", revision=kwargs.get("revision"))
    except Exception:  # noqa: BLE001 - a cache probe must never fail the load
        return False
    return isinstance(found, str)


_REACHED: dict[str, float] = {}  # endpoint -> when it last answered: a check then a load ask once
_REACHED_FOR = 60.0  # seconds


def _hub_unreachable_reason() -> str | None:
    import time

    from huggingface_hub import constants

    if time.monotonic() - _REACHED.get(constants.ENDPOINT, -_REACHED_FOR) < _REACHED_FOR:
        return None

    endpoint = urlparse(constants.ENDPOINT)
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=5):
            _REACHED[constants.ENDPOINT] = time.monotonic()
            return None
    except OSError as err:
        return f"the Hugging Face Hub ({constants.ENDPOINT}) could not be reached ({err.strerror or err})"


def _reason(err: BaseException) -> str:
    text = " ".join(str(err).split())
    lowered = text.lower()
    if "offline" in lowered or "couldn't connect" in lowered or "local_files_only" in lowered:
        return OFFLINE_REASON
    if "is not a valid model identifier" in lowered or "repository not found" in lowered or "404" in lowered:
        return "no such model on the Hugging Face Hub (or it is private)"
    if "revision" in lowered and ("not found" in lowered or "invalid" in lowered):
        return "that revision does not exist"
    if "deserializ" in lowered or "header too" in lowered or "incomplete metadata" in lowered:
        return f"its safetensors weights are damaged ({text[:120]})"
    if "safetensors" in lowered:
        return "it has no safetensors weights (only safetensors are loaded, never pickle files)"
    return text if len(text) <= 300 else text[:297] + "..."


def _message(model: str, revision: str | None, reason: str, setting: str = DEFAULT_SETTING) -> str:
    at = f" at revision {revision!r}" if revision else ""
    return f"Could not load the model {model!r}{at}: {reason}. {LOCAL_HINT.format(setting=setting)}"
