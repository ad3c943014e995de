"""nsfw-space: NSFW image moderation with a ViT classifier, as a Python API, a CLI and a Gradio Space.

>>> from nsfw_space import NSFWClassifier
>>> clf = NSFWClassifier.from_pretrained("Falconsai/nsfw_image_detection")  # doctest: +SKIP
>>> clf.predict("photo.jpg").nsfw_score  # doctest: +SKIP

The public names are imported on first use, so ``import nsfw_space`` (and ``python -m nsfw_space
--help``) loads neither torch nor Gradio.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_PUBLIC = {
    "NSFWClassifier": "nsfw_space.model.classifier",
    "Prediction": "nsfw_space.model.prediction",
    "DEFAULT_MODEL": "nsfw_space.config",
    "Settings": "nsfw_space.config",
    "ConfigError": "nsfw_space.errors",
    "ExplainError": "nsfw_space.errors",
    "Explanation": "nsfw_space.model.explain",
    "InvalidImageError": "nsfw_space.errors",
    "ModelLoadError": "nsfw_space.errors",
    "NSFWSpaceError": "nsfw_space.errors",
}

__all__ = [
    "DEFAULT_MODEL",
    "ConfigError",
    "ExplainError",
    "Explanation",
    "InvalidImageError",
    "ModelLoadError",
    "NSFWClassifier",
    "NSFWSpaceError",
    "Prediction",
    "Settings",
    "__version__",
]

if TYPE_CHECKING:
    from nsfw_space.config import DEFAULT_MODEL, Settings
    from nsfw_space.errors import ConfigError, ExplainError, InvalidImageError, ModelLoadError, NSFWSpaceError
    from nsfw_space.model.classifier import NSFWClassifier
    from nsfw_space.model.explain import Explanation
    from nsfw_space.model.prediction import Prediction


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'nsfw_space' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
