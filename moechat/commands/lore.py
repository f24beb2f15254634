"""`python -m moechat lore show FILE` and `lore convert IN OUT`: SillyTavern World Info files and V2/V3 lorebooks.

`show` lists the entries as the scan reads them (docs/formats.md §2.6). `convert` writes a World Info file as a
`lorebook_v3` book and a book as World Info (as SillyTavern's "Import Card Lore" does); `--to` picks the output
kind, and World Info to World Info rewrites the file unchanged.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from moechat.cards.lorebook import Lorebook
from moechat.cards.world_info import POSITIONS, LoreFile, read_lore_file, to_character_book, to_world_info
from moechat.errors import CardError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m moechat lore", description=__doc__)
    sub = p.add_subparsers(dest="action", required=True)
    show = sub.add_parser("show", help="list the entries of a World Info file or lorebook")
    show.add_argument("file", type=Path)
    convert = sub.add_parser("convert", help="World Info <-> lorebook_v3")
    convert.add_argument("input", type=Path)
    convert.add_argument("output", type=Path)
    convert.add_argument("--to", choices=("world", "lorebook"), help="output kind (default: the other kind)")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    lore = read_lore_file(args.file if args.action == "show" else args.input)
    if args.action == "show":
        return show(lore)
    kind = args.to or ("lorebook" if lore.world is not None else "world")
    args.output.write_text(converted(lore, kind), encoding="utf-8")
    print(f"wrote {args.output} ({kind}, {len(lore.rules)} entries)", file=sys.stderr)
    return 0


def converted(lore: LoreFile, kind: str) -> str:
    if kind == "world":
        world = lore.world if lore.world is not None else to_world_info(_book(lore), lore.name)
        return world.dumps()
    book = _book(lore) if lore.world is None else to_character_book(lore.world)
    return json.dumps(book.to_lorebook_v3(), ensure_ascii=False, indent=2)


def _book(lore: LoreFile) -> Lorebook:
    if lore.book is None:
        raise CardError(f"{lore.name}: not a lorebook")
    return lore.book


def show(lore: LoreFile) -> int:
    kind = "SillyTavern World Info" if lore.world is not None else "lorebook"
    print(f"{lore.name}: {kind}, {len(lore.rules)} entries")
    for rule in lore.rules:
        where = POSITIONS[rule.position] if 0 <= rule.position < len(POSITIONS) else f"position {rule.position}"
        where += f" depth {rule.depth}" if where == "at_depth" else ""
        flags = [
            name
            for name, on in (
                ("constant", rule.constant),
                ("disabled", rule.disabled),
                ("exclude-recursion", rule.exclude_recursion),
                ("prevent-recursion", rule.prevent_recursion),
                ("case-sensitive", rule.case_sensitive is True),
                ("whole-words", rule.match_whole_words is True),
                ("substring", rule.match_whole_words is False),
            )
            if on
        ]
        flags += [f"scan depth {rule.scan_depth}"] if rule.scan_depth is not None else []
        flags += [f"group {rule.group}"] if rule.group else []
        flags += [f"{rule.probability:g}%"] if rule.use_probability and rule.probability != 100 else []
        keys = ", ".join(rule.keys) or "(no keys)"
        label = f" {rule.comment!r}" if rule.comment else ""
        print(
            f"  #{rule.uid}{label} order {rule.order:g} {where}: {keys}" + (f" [{'; '.join(flags)}]" if flags else "")
        )
    return 0
