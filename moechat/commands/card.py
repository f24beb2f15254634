"""`python -m moechat card show FILE` / `card convert IN OUT`: inspect and convert character cards."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from moechat.cards.card import read_card, write_card
from moechat.errors import CardError

USAGE = """usage: python -m moechat card show FILE
       python -m moechat card convert IN OUT

show     print the normalised card as V3 JSON (unknown fields kept)
convert  convert between .json, .png and .charx (a PNG without an image gets a generated avatar)"""


def main(argv: list[str]) -> int:
    """Run the `card` command; CardError propagates to the dispatcher (one-line message, status 2)."""
    if len(argv) == 2 and argv[0] == "show":
        return show(Path(argv[1]))
    if len(argv) == 3 and argv[0] == "convert":
        return convert(Path(argv[1]), Path(argv[2]))
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    print(USAGE, file=sys.stderr)
    return 2


def show(path: Path) -> int:
    """Print the card at `path` as V3-shaped JSON."""
    card = read_card(path)
    print(json.dumps(card.to_v3_json(), ensure_ascii=False, indent=2))
    return 0


def convert(source: Path, dest: Path) -> int:
    """Read `source`, write `dest` (format by extension), stamping the modification date."""
    if dest.suffix.lower() not in (".json", ".png", ".charx"):
        raise CardError(f"{dest.name}: output must end in .json, .png or .charx")
    card = read_card(source)
    write_card(card, dest, modified=int(time.time()))
    print(f"wrote {dest}", file=sys.stderr)
    return 0
