"""V3 lorebook entry decorators: `@@name value` lines at the top of an entry's content (docs/formats.md §2.6).

Supported: `@@depth`, `@@position`, `@@activate`, `@@dont_activate`, `@@role`, `@@scan_depth`; others are
stripped from the inserted text but kept in the stored entry. `@@@` lines are fallbacks, used only when
the decorator before them is unsupported.
"""

from __future__ import annotations

from dataclasses import dataclass

SUPPORTED_DECORATORS = frozenset({"depth", "position", "activate", "dont_activate", "role", "scan_depth"})


@dataclass(frozen=True)
class Decorators:
    """Decorators parsed from the top of an entry's content (`@@name value` lines)."""

    values: dict[str, str]
    content: str


def parse_decorators(content: str) -> Decorators:
    """Split leading `@@` lines off `content`; `@@@` fallbacks apply only after an unsupported one."""
    lines = content.split("\n")
    values: dict[str, str] = {}
    last_supported = True
    taken = 0
    for line in lines:
        if not line.startswith("@@"):
            break
        taken += 1
        fallback = line.startswith("@@@")
        name, _, value = line.lstrip("@").partition(" ")
        if fallback and last_supported:
            continue
        last_supported = name in SUPPORTED_DECORATORS
        if last_supported:
            values[name] = value.strip()
    return Decorators(values, "\n".join(lines[taken:]))
