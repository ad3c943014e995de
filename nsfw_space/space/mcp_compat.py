"""Work-arounds that make every tool of Gradio 6.31's MCP server usable from a real MCP client.

Each patch wraps one method of ``gradio.mcp.GradioMCPServer`` and keeps its behaviour otherwise;
``install()`` is idempotent and only called when the Space serves MCP. No upstream issue for
these was found when they were written (searched gradio-app/gradio, 2026-11); remove a patch
once the Gradio release pinned in requirements.txt no longer needs it (the MCP tests say which).

1. ``simplify_filedata_schema``: a list-of-files input (``gr.File(file_count="multiple")``) is
   described with ``{"$defs": {"FileData": ...}, "items": {"$ref": "#/$defs/FileData"}}`` inside
   the property, where ``#/`` means the document root: the MCP SDK's validator fails every call
   with ``PointerToNowhere: '/$defs/FileData' does not exist``, and the items are not turned into
   file strings. Local ``$ref``s are inlined first, so the files become plain strings (``data:``
   or ``http(s)`` URLs) like single-file inputs; a file's description, which Gradio fills with
   the whole ``FileData`` docstring, becomes one sentence on what to send.
2. ``convert_strings_to_filedata``: the position of a list's file items is recorded as
   ``["files", "items"]`` but looked up as ``["files", 0]``, so list items were never turned into
   files. Positions are expanded against the value first.
3. ``postprocess_output_data``: a dict or list result is sent as ``str(value)``, Python's repr
   (``'is_nsfw': True``), which no client can parse. It is sent as JSON text instead. And a tool
   with several outputs (``/explain``: two images and JSON) reaches it as one tuple (the queued
   path wraps the client's result in a list), so all three came back as one repr; the tuple is
   spread into its outputs first, so the images come back as images.
4. ``convert_strings_to_filedata``: a ``data:`` URL is base64-decoded into the cache before the
   app sees it, so the upload size limit does not apply. Its size is checked from the encoded
   length first, against the Space's ``max_file_size``.
"""

from __future__ import annotations

import copy
import json
import logging
from typing import Any

from nsfw_space.errors import InvalidImageError
from nsfw_space.space.payloads import check_data_url, plain_file_schema

logger = logging.getLogger(__name__)

_PATCHED = "_nsfw_space_patched"


def install() -> None:
    """Patch Gradio's MCP server class (once per process)."""
    from gradio.mcp import GradioMCPServer
    from gradio_client.utils import is_file_obj_with_meta

    if getattr(GradioMCPServer, _PATCHED, False):
        return
    simplify = GradioMCPServer.simplify_filedata_schema
    postprocess = GradioMCPServer.postprocess_output_data
    convert = GradioMCPServer.convert_strings_to_filedata

    def simplify_filedata_schema(self: Any, schema: dict[str, Any]) -> Any:
        simplified, positions = simplify(self, inline_local_refs(schema))
        return plain_file_schema(simplified), positions

    def postprocess_output_data(self: Any, data: Any, root_url: str) -> list[Any]:
        contents: list[Any] = []
        if len(data) == 1 and isinstance(data[0], tuple):  # several outputs, as the queued call returns them
            data = list(data[0])
        for output in data:
            if isinstance(output, (dict, list)) and not is_file_obj_with_meta(output):
                text = json.dumps(output, ensure_ascii=False, default=str)
                contents.append(self.types.TextContent(type="text", text=text))
            else:
                contents.extend(postprocess(self, [output], root_url))
        return contents

    def convert_strings_to_filedata(self: Any, value: Any, positions: list[list[str | int]]) -> Any:
        limit = getattr(self.blocks, "max_file_size", None)  # bytes, or None / inf for no limit
        for text in _strings(value):
            if text.startswith("data:"):
                try:
                    check_data_url(text, limit)
                except InvalidImageError as err:
                    raise ValueError(str(err)) from None
        return convert(self, value, [path for position in positions for path in _expand(value, position)])

    GradioMCPServer.simplify_filedata_schema = simplify_filedata_schema
    GradioMCPServer.postprocess_output_data = postprocess_output_data
    GradioMCPServer.convert_strings_to_filedata = convert_strings_to_filedata
    setattr(GradioMCPServer, _PATCHED, True)


def inline_local_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with every ``{"$ref": "#/$defs/X"}`` replaced by the definition of X found in
    any ``$defs`` of the schema, and the ``$defs`` themselves dropped."""
    definitions: dict[str, Any] = {}

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            definitions.update(node.get("$defs") or {})
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    def inline(node: Any, seen: tuple[str, ...]) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                name = ref.rsplit("/", 1)[-1]
                if name in definitions and name not in seen:
                    merged = {
                        **copy.deepcopy(definitions[name]),
                        **{k: v for k, v in node.items() if k != "$ref"},
                    }
                    return inline(merged, (*seen, name))
            return {key: inline(value, seen) for key, value in node.items() if key != "$defs"}
        if isinstance(node, list):
            return [inline(value, seen) for value in node]
        return node

    collect(schema)
    return inline(schema, ()) if definitions else schema


def _expand(value: Any, position: list[str | int]) -> list[list[str | int]]:
    """Concrete paths into ``value`` for a schema position, where ``"items"`` means every element
    of a list."""
    if not position:
        return [[]]
    head, rest = position[0], position[1:]
    if head == "items" and isinstance(value, list):
        return [[index, *tail] for index, item in enumerate(value) for tail in _expand(item, rest)]
    if isinstance(value, dict) and head in value:
        return [[head, *tail] for tail in _expand(value[head], rest)]
    return [list(position)]


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for item in value.values() for text in _strings(item)]
    if isinstance(value, list):
        return [text for item in value for text in _strings(item)]
    return []
