"""`python -m moechat upgrade IN -o OUT.gguf`: rewrite a pre-2024 split-expert MoE GGUF in today's stacked layout.

llama.cpp stopped loading one-tensor-per-expert files (blk.N.ffn_gate.X.weight) in November 2024. The upgrade
stacks each layer's experts byte for byte (no requantization); routers, other tensors and metadata are copied as
they are. The app and the other commands do this by themselves (once, cached in the data dir); this command writes
the upgraded file where you choose.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from moechat.commands.model_arg import add_data_dir_argument, add_model_argument, resolve_spec
from moechat.gguf.upgrade import upgrade


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m moechat upgrade", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_argument(parser, "input", what="the split-expert model to upgrade")
    parser.add_argument("-o", "--output", type=Path, required=True, help="where to write the stacked GGUF")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_data_dir_argument(parser)
    args = parser.parse_args(argv)
    source = resolve_spec(args.input, args.data_dir, upgrade=False)
    start = time.perf_counter()
    out = upgrade(source, args.output, progress=not args.quiet)
    seconds = time.perf_counter() - start
    size = out.stat().st_size / 2**20
    print(f"wrote {out} ({size:,.1f} MiB) in {seconds:.1f} s ({size / max(seconds, 1e-9):,.0f} MiB/s)", file=sys.stderr)
    return 0
