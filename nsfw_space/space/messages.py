"""How the Space says no: errors inside a request become one ``gr.Error`` sentence each, and the
folder the page's own files go to."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import gradio as gr
from sqlalchemy.exc import SQLAlchemyError as DatabaseError

from nsfw_space.errors import DeskError, InvalidImageError

logger = logging.getLogger(__name__)

FILE_REFUSED = "This file can't be checked"
DESK_DOWN = (
    "The moderation desk's database is not answering, so known images can't be checked; try again shortly."
)


def output_folder() -> Path:
    """Where the page's and the API's own files (CSV, heat maps, redacted copies) go: Gradio's
    upload folder, deleted with the uploads."""
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder()) / "nsfw-space"


def is_jpeg(source: str | bytes) -> bool:
    """Whether the file starts as a JPEG does (its name may say anything)."""
    if isinstance(source, str):
        with open(source, "rb") as handle:
            source = handle.read(3)
    return source[:3] == b"\xff\xd8\xff"


@contextmanager
def shown_as_error(title: str) -> Iterator[None]:
    """An InvalidImageError inside becomes a ``gr.Error``: its sentence under ``title``, no traceback."""
    try:
        yield
    except InvalidImageError as err:
        raise gr.Error(str(err), title=title, print_exception=False) from None


@contextmanager
def shown_as_desk_error(
    database_down: str = "The desk's database is not answering; try again shortly.",
) -> Iterator[None]:
    """A desk refusal becomes its sentence in a ``gr.Error``; database trouble, ``database_down``."""
    try:
        yield
    except DeskError as err:
        raise gr.Error(str(err), print_exception=False) from None
    except DatabaseError as err:
        logger.warning("Desk database: %s", err.__class__.__name__)
        raise gr.Error(database_down, print_exception=False) from None
