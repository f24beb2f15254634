"""A local check, not a test: moechat's prompts against SillyTavern's for every instruct preset a checkout ships.

    npm install --prefix tests/st_oracle        (jsdom, once)
    python -m tests.st_oracle.shipped ST_CHECKOUT

Runs oracle.mjs over the checkout's own presets, read from it at run time: each instruct preset with the context
template of the same name (else the checkout's "Default") and the system prompt its default settings select, with
our cards and chats (cases.py) in reply, impersonate and continue, and with post-history instructions allowed. Works
in a temporary folder and prints how many prompts (and stop strings) moechat renders byte-identically; nothing is
written into the repository.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.st_oracle.cases import inputs
from tests.st_oracle.render import render_case

HERE = Path(__file__).parent


def by_name(folder: Path) -> dict[str, Path]:
    """The preset files of one kind, by the name inside them (the first file of a name, as ST lists them)."""
    out: dict[str, Path] = {}
    for path in sorted(folder.glob("*.json")):
        out.setdefault(json.loads(path.read_text(encoding="utf-8"))["name"], path)
    return out


def shipped_cases(st: Path) -> list[dict[str, Any]]:
    presets = st / "default" / "content" / "presets"
    instruct, context, sysprompt = (by_name(presets / kind) for kind in ("instruct", "context", "sysprompt"))
    settings = json.loads((st / "default" / "content" / "settings.json").read_text(encoding="utf-8"))
    system = str(sysprompt[settings["power_user"]["sysprompt"]["name"]])
    out = []
    for name, path in instruct.items():
        refs = {"instruct": str(path), "context": str(context.get(name, context["Default"])), "sysprompt": system}
        variants = [
            ("lumi", "lumi", "normal", {}),
            ("bram", "bram_ask", "normal", {}),
            ("lumi", "lumi", "normal", {"allow_jailbreak": True, "use_stop_strings": True}),
            ("lumi", "lumi", "impersonate", {}),
            ("bram", "bram", "continue", {}),
        ]
        for card, chat, mode, overrides in variants:
            label = " | post-history" if overrides else ""
            case = {"id": f"{name} | {card} | {mode}{label}", "card": card, "chat": chat, "type": mode, **refs}
            out.append(case | ({"context_overrides": overrides} if overrides else {}))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("st", type=Path, help="a SillyTavern checkout")
    args = parser.parse_args(argv)
    st = args.st.resolve()
    data = inputs(shipped_cases(st))
    with tempfile.TemporaryDirectory(prefix="st-shipped-") as tmp:
        cases_path, goldens_path = Path(tmp) / "cases.json", Path(tmp) / "goldens.json"
        cases_path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        subprocess.run(["node", str(HERE / "oracle.mjs"), str(st), str(cases_path), str(goldens_path)], check=True)
        golden = json.loads(goldens_path.read_text(encoding="utf-8"))
    by_id = {case["id"]: case for case in data["cases"]}
    differ: list[str] = []
    for result in golden["results"]:
        text, stops = render_case(by_id[result["id"]], data, st)  # the preset paths are absolute
        if text != result["prompt"] or list(stops) != result["stops"]:
            differ.append(result["id"])
    names = {case["id"].split(" | ")[0] for case in data["cases"]}
    bad = {case_id.split(" | ")[0] for case_id in differ}
    total = len(golden["results"])
    print(f"SillyTavern {golden['sillytavern']}: {total - len(differ)} of {total} prompts byte-identical")
    print(f"{len(names) - len(bad)} of {len(names)} shipped instruct presets byte-identical in every case")
    for case_id in differ:
        print(f"differs: {case_id}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
