"""`python -m moechat COMMAND ...`: each command lives in moechat/commands/<command>.py as main(argv)."""

from __future__ import annotations

import importlib
import sys

from moechat.errors import MoechatError

COMMANDS = {
    "trace": "trace the router: per-token routing of a prompt and its continuation, as JSON",
    "inspect": "gate provenance of a MoE GGUF: router norms, cosines, dead gates",
    "build-moe": "build a frankenMoE GGUF from dense GGUFs and a mergekit-moe YAML config",
    "card": "show or convert character cards (JSON, PNG, CHARX)",
    "prompt": "print exactly what the model will see for a card and a chat",
    "lore": "show or convert World Info and lorebooks (SillyTavern World Info, V2/V3 books)",
    "chats": "import, list and export chats",
    "personas": "import SillyTavern personas, list personas",
    "quantize": "quantize a GGUF keeping routers in float32, with a routing fidelity report",
    "compare": "routing fidelity report of two models of one shape",
    "upgrade": "rewrite a pre-2024 split-expert MoE GGUF in the stacked layout llama.cpp loads today",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        width = max(map(len, COMMANDS))
        lines = [f"  {name:<{width}}  {text}" for name, text in COMMANDS.items()]
        print("usage: python -m moechat COMMAND [ARGS...]\n\ncommands:\n" + "\n".join(lines))
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    name, rest = argv[0], argv[1:]
    try:
        module = importlib.import_module(f"moechat.commands.{name.replace('-', '_')}")
    except ModuleNotFoundError as exc:
        if exc.name != f"moechat.commands.{name.replace('-', '_')}":
            raise
        print(f"moechat: '{name}' is not available in this version", file=sys.stderr)
        return 2
    try:
        return int(module.main(rest) or 0)
    except MoechatError as exc:
        print(f"moechat {name}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
