"""`python -m moechat quantize IN TYPE [-o OUT.gguf]`: quantize with llama.cpp, routers kept in float32,
then print the routing fidelity report of OUT against IN (saved beside OUT as .fidelity.json and .fidelity.html
unless --json/--html say where; --no-report skips it). OUT defaults to IN's name with TYPE: beside IN for a local
file, else in the current folder.

TYPE is a llama.cpp type such as Q8_0, Q6_K, Q5_K_M, Q4_K_M (IQ types need an importance matrix).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from moechat.commands.compare import add_output_flags, emit
from moechat.commands.model_arg import add_data_dir_argument, add_model_argument, resolve_spec
from moechat.engine.quantize import default_output, quantize
from moechat.moe.fidelity import compare_models


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m moechat quantize", description=__doc__)
    add_model_argument(parser, "input", what="the model to quantize (F32, F16 or BF16)")
    parser.add_argument("type", help="target type, e.g. Q8_0 or Q4_K_M")
    parser.add_argument("-o", "--output", type=Path, help="output GGUF (default: IN's name with TYPE, beside IN)")
    parser.add_argument("--allow-requantize", action="store_true", help="accept an already quantized input")
    parser.add_argument("--no-report", action="store_true", help="skip the routing fidelity report")
    add_output_flags(parser)
    add_data_dir_argument(parser)
    args = parser.parse_args(argv)
    source = resolve_spec(args.input, args.data_dir)
    local = Path(args.input).expanduser()
    out = args.output or default_output(local if local.is_file() else Path(source.name), args.type)
    result = quantize(
        source, out, args.type, threads=args.threads, allow_requantize=args.allow_requantize, progress=_progress
    )
    print(
        f"\r{result.path}: {result.type_name}, {result.in_bytes / 2**20:,.1f} MiB -> {result.out_bytes / 2**20:,.1f} "
        f"MiB in {result.seconds:.1f} s; routers {', '.join(sorted(set(result.router_types))) or 'none'} "
        "(unchanged)",
        file=sys.stderr,
    )
    if args.no_report:
        return 0
    print(f"comparing {result.path.name} to {source.name} ...", file=sys.stderr)
    report = compare_models(source, result.path, n_threads=args.threads)
    stem = result.path.with_suffix("")
    emit(report, args.json or stem.with_suffix(".fidelity.json"), args.html or stem.with_suffix(".fidelity.html"))
    return 0


def _progress(index: int, total: int, name: str) -> None:
    print(f"\r[{index:>4}/{total}] {name[:60]:<60}", end="", file=sys.stderr, flush=True)
