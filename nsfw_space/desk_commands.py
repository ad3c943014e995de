"""``nsfw-space lists ...`` and ``nsfw-space desk ...``: the moderation desk from a terminal.

The database is ``--db URL``, else ``NSFW_SPACE_DESK_DB``. Mistakes are one line and exit 2.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path
from typing import Any

from nsfw_space.errors import ConfigError, DeskError, InvalidImageError


def add_lists(subcommands: Any) -> argparse.ArgumentParser:
    lists = subcommands.add_parser(
        "lists", help="the desk's known-image lists (PDQ hashes): add, remove, import, export"
    )
    actions = lists.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="put images' hashes on a list")
    add.add_argument("list", choices=("block", "allow"))
    add.add_argument("files", nargs="+", metavar="FILE")
    add.add_argument("--note", default="", help="a note kept beside each entry (shown in every match)")
    remove = actions.add_parser("remove", help="take hashes (or images' hashes) off a list")
    remove.add_argument("list", choices=("block", "allow"))
    remove.add_argument("entries", nargs="+", metavar="HASH_OR_FILE")
    imported = actions.add_parser("import", help="read a hash list (one hex hash per line, optional note)")
    imported.add_argument("list", choices=("block", "allow"))
    imported.add_argument("file", metavar="FILE", help="the list file, or - for standard input")
    exported = actions.add_parser("export", help="write a list in the same format")
    exported.add_argument("list", choices=("block", "allow"))
    exported.add_argument("file", nargs="?", default="-", metavar="FILE", help="default: standard output")
    for parser in (add, remove, imported, exported):
        parser.add_argument(
            "--db", default=None, metavar="URL", help="the desk database (default NSFW_SPACE_DESK_DB)"
        )
        parser.add_argument("--verbose", "-v", action="store_true", help="debug logging on stderr")
    lists.set_defaults(run=run_lists)
    return lists


def add_desk(subcommands: Any) -> argparse.ArgumentParser:
    desk = subcommands.add_parser("desk", help="the moderation desk: status, export, moderators, retention")
    actions = desk.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("status", help="JSON counts: pending, decided, list sizes, audit")
    export = actions.add_parser("export", help="write the decided images as an ImageFolder for train/eval")
    export.add_argument("out_dir", metavar="DIR")
    moderator = actions.add_parser(
        "add-moderator",
        help="add a moderator (or set a new password); the password is read from stdin or asked",
    )
    moderator.add_argument("name")
    actions.add_parser("purge", help="delete stored images past their retention now")
    for parser in actions.choices.values():
        parser.add_argument(
            "--db", default=None, metavar="URL", help="the desk database (default NSFW_SPACE_DESK_DB)"
        )
        parser.add_argument("--verbose", "-v", action="store_true", help="debug logging on stderr")
    desk.set_defaults(run=run_desk)
    return desk


def _desk(args: argparse.Namespace) -> Any:
    from nsfw_space.config import Settings
    from nsfw_space.desk.desk import Desk

    url = args.db or os.environ.get("NSFW_SPACE_DESK_DB", "")
    if not url:
        raise ConfigError(
            "no desk database: give --db URL or set NSFW_SPACE_DESK_DB (e.g. sqlite:///desk.db)"
        )
    desk = Desk.from_settings(Settings.from_env(desk_db=url))
    assert desk is not None
    return desk


def _image_hash(desk: Any, path: str) -> Any:
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{path}: no such file")
    image_hash = desk.hash_of(file)
    if image_hash is None:
        raise InvalidImageError(f"{path}: not an image this desk can read")
    return image_hash


def run_lists(args: argparse.Namespace) -> int:
    from nsfw_space.media.hashing import normalized_hex

    desk = _desk(args)
    try:
        if args.action == "add":
            hashes = [(path, _image_hash(desk, path)) for path in args.files]  # all read before any is added
            for path, image_hash in hashes:
                added = desk.lists.add_image(
                    args.list, image_hash, note=args.note or Path(path).name, by="cli"
                )
                print(f"{image_hash.hex} {'added to' if added else 'already on'} {args.list}  {path}")
        elif args.action == "remove":
            for entry in args.entries:
                hex_hash = (
                    normalized_hex(entry) if not Path(entry).is_file() else _image_hash(desk, entry).hex
                )
                gone = desk.lists.remove(args.list, hex_hash)
                print(f"{hex_hash} {'removed from' if gone else 'was not on'} {args.list}")
        elif args.action == "import":
            lines = sys.stdin.read().splitlines() if args.file == "-" else _read_lines(args.file)
            added, present = desk.lists.import_lines(args.list, lines, by="import")
            print(f"{added} added to {args.list}, {present} already there")
        else:
            text = "".join(line + "\n" for line in desk.lists.export_lines(args.list))
            if args.file == "-":
                sys.stdout.write(text)
            else:
                Path(args.file).write_text(text, encoding="utf-8")
    finally:
        desk.close()
    return 0


def run_desk(args: argparse.Namespace) -> int:
    desk = _desk(args)
    try:
        if args.action == "status":
            print(json.dumps(desk.status(), indent=2, sort_keys=True))
        elif args.action == "export":
            out_dir = Path(args.out_dir)
            if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
                raise ConfigError(f"{out_dir} is not an empty folder; give a new or empty one")
            written = desk.queue.export(out_dir)
            print(f"wrote {written['nsfw']} nsfw and {written['normal']} normal images to {out_dir}")
        elif args.action == "add-moderator":
            password = (
                sys.stdin.readline().rstrip("\n") if not sys.stdin.isatty() else getpass.getpass("password: ")
            )
            desk.moderators.add(args.name, password)
            print(f"moderator {args.name} can now sign in to the Review tab")
        else:
            print(f"{desk.queue.purge_expired()} stored images past their retention deleted")
    finally:
        desk.close()
    return 0


def _read_lines(path: str) -> list[str]:
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DeskError(f"{path}: cannot be read as a text list ({err.__class__.__name__})") from err


def desk_decisions(settings: Any, folder: Path) -> Path:
    """The desk's decided items written as an ImageFolder in ``folder``. Raises ConfigError."""
    from nsfw_space.desk.desk import Desk

    desk = Desk.from_settings(settings)
    if desk is None:
        raise ConfigError("--from-desk needs the desk's database: set NSFW_SPACE_DESK_DB")
    try:
        written = desk.queue.export(folder)
    finally:
        desk.close()
    if not written["nsfw"] or not written["normal"]:
        raise ConfigError(
            f"the desk has {written['nsfw']} blocked and {written['normal']} allowed decisions; eval needs both"
        )
    return folder
