"""The exceptions that are part of the public API: every user mistake is one of these."""

from __future__ import annotations


class NSFWSpaceError(Exception):
    """Base class of every error this package raises on purpose."""


class InvalidImageError(NSFWSpaceError, ValueError):
    """The input is not an image we can classify (empty, not an image, truncated, too large, ...)."""


class ModelLoadError(NSFWSpaceError, RuntimeError):
    """The model could not be loaded; the message names the model, the reason and what to set instead."""


class ConfigError(NSFWSpaceError, ValueError):
    """A setting (environment variable or argument) has a value we cannot use."""


class ExplainError(NSFWSpaceError, ValueError):
    """An explanation cannot be made: a model with no transformer blocks to explain, torchcam
    missing, or an argument out of range (the message says which)."""


class DeskError(NSFWSpaceError, RuntimeError):
    """The moderation desk cannot do what was asked: its database cannot be opened, a hash or a
    list name is not valid, a lease has expired, or the caller is not a signed-in moderator."""


class NotSignedInError(DeskError):
    """A desk action by a caller who has not signed in as an allowed moderator."""
