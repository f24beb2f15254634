"""`python -m moechat build-moe CONFIG.yml -o OUT.gguf`: build a frankenMoE GGUF from dense GGUFs.

CONFIG.yml is a mergekit-moe config whose models are local GGUF paths (relative to the config's folder);
see moechat/mergekit_config.py for the fields. The output is written whole or not at all.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from moechat.moe.frankenmoe import build_from_file


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m moechat build-moe",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("config", help="mergekit-moe YAML config with local GGUF paths")
    parser.add_argument("-o", "--output", required=True, help="where to write the MoE GGUF")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    out = build_from_file(args.config, args.output, progress=not args.quiet)
    size = out.stat().st_size / 2**20
    print(f"wrote {out} ({size:.1f} MiB) in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    print(f"check its gates with: python -m moechat inspect {Path(args.output)}", file=sys.stderr)
    return 0
