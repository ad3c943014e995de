"""A caller's arguments, checked: each mistake becomes one sentence in a ``gr.Error``."""

from __future__ import annotations

import math
from typing import Any

import gradio as gr

from nsfw_space.model.explain import DEFAULT_LEVEL

DEFAULT_K = 2  # k-of-n's k, the same on the page, in the API and in the CLI
MAX_SAMPLED_FRAMES = 64


def threshold_value(value: Any, default: float) -> float:
    """A caller's threshold: a number from 0 to 1 (not a boolean, not NaN), else one sentence."""
    if value is None:
        return default
    limit = _number(value)
    if limit is None or not 0.0 <= limit <= 1.0:
        raise gr.Error(
            f"The threshold must be a number between 0 and 1, not {_shown(value)}.", print_exception=False
        )
    return limit


def whole_number(value: Any, name: str, low: int, high: int, *, default: int) -> int:
    """A caller's count: a whole number from ``low`` to ``high`` (2.0 is 2), else one sentence."""
    if value is None:
        return default
    number = _number(value)
    if number is None or number != int(number) or not low <= number <= high:
        raise gr.Error(
            f"{name} must be a whole number from {low} to {high}, not {_shown(value)}.", print_exception=False
        )
    return int(number)


def number_between(value: Any, name: str, low: float, high: float, *, default: float | None) -> float | None:
    """A caller's number from ``low`` to ``high`` (not a boolean, not NaN), else one sentence."""
    if value is None:
        return default
    number = _number(value)
    if number is None or not low <= number <= high:
        raise gr.Error(
            f"{name} must be a number from {low:g} to {high:g}, not {_shown(value)}.", print_exception=False
        )
    return number


def _number(value: Any) -> float | None:
    """``value`` as a finite float; None for booleans, text that is no number, NaN and infinities."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def optional_text(value: Any, name: str) -> str:
    """A caller's optional text field, stripped; anything but text (or nothing) is refused."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise gr.Error(f"{name} must be text, not {_shown(value)}.", print_exception=False)
    return value.strip()


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def redaction_arguments(level: Any, strength: Any) -> tuple[float, float | None]:
    """A caller's heat level (0 to 1) and blur radius (up to 500 pixels; empty or 0: the default)."""
    heat_level = number_between(level, "level", 0.0, 1.0, default=DEFAULT_LEVEL)
    radius = number_between(strength, "strength", 0.0, 500.0, default=None) or None
    return float(heat_level), radius
