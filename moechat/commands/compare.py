"""`python -m moechat compare A B [--json OUT] [--html OUT]`: routing fidelity of B against A.

Both models are teacher-forced on moechat's fixed text set (moechat.fidelity.TEXTS): per-layer top-1 agreement,
Cohen's kappa, mean |Δp| and logit-margin correlation, then next-token agreement and KL divergence. The table goes
to stdout; --json and --html also save the numbers and the per-layer figure.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from moechat.commands.model_arg import add_data_dir_argument, add_model_argument, resolve_spec
from moechat.moe.fidelity import FidelityReport, compare_models, write_html, write_json


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m moechat compare", description=__doc__)
    add_model_argument(parser, "model_a", what="the reference model (e.g. the F16/F32 original)")
    add_model_argument(
        parser, "model_b", what="the model to judge (e.g. a quantization of A: same shape, same tokenizer)"
    )
    add_output_flags(parser)
    add_data_dir_argument(parser)
    args = parser.parse_args(argv)
    path_a, path_b = resolve_spec(args.model_a, args.data_dir), resolve_spec(args.model_b, args.data_dir)
    print(f"comparing {path_b.name} to {path_a.name} ...", file=sys.stderr)
    report = compare_models(path_a, path_b, n_threads=args.threads)
    emit(report, args.json, args.html)
    return 0


def add_output_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, metavar="OUT", help="save the report as JSON")
    parser.add_argument("--html", type=Path, metavar="OUT", help="save the per-layer figure as an HTML file")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for llama.cpp")


def emit(report: FidelityReport, json_path: Path | None, html_path: Path | None) -> None:
    """Print the table; write the JSON and HTML files that were asked for, and say where."""
    print(report.table())
    if json_path is not None:
        print(f"JSON: {write_json(report, json_path)}", file=sys.stderr)
    if html_path is not None:
        print(f"figure: {write_html(report, html_path)}", file=sys.stderr)
