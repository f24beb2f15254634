"""`python -m moechat inspect MODEL [--json]`: gate provenance of a MoE GGUF, as a table.

Only the metadata and routers are read, so a pre-2024 split-expert file is inspected as it is (no upgrade)."""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np

from moechat.commands.model_arg import add_data_dir_argument, add_model_argument, resolve_spec
from moechat.gguf.info import expert_layout, open_reader
from moechat.moe.provenance import COLLINEAR_COS, MERGEKIT_COND, LayerGates, Provenance, gate_provenance

MAX_NORM_COLUMNS = 8


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m moechat inspect", description=__doc__)
    add_model_argument(parser, "model", what="the MoE model to inspect")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON instead of a table")
    add_data_dir_argument(parser)
    args = parser.parse_args(argv)
    path = resolve_spec(args.model, args.data_dir, upgrade=False)
    if expert_layout(open_reader(path)) == "split":
        print(f"moechat: {path.name} uses the pre-2024 split-expert layout (routers read as stored)", file=sys.stderr)
    prov = gate_provenance(path)
    print(json.dumps(to_json(prov), indent=1) if args.json else format_provenance(prov))
    return 0


def format_provenance(prov: Provenance) -> str:
    """A readable report: header, one table row per layer, then what was flagged."""
    return "\n".join([*_header(prov), "", *_table(prov), "", *_summary(prov)])


def _header(prov: Provenance) -> list[str]:
    mode = f" · gate mode {prov.gate_mode}" if prov.gate_mode else ""
    lines = [f"{prov.model_name}  ({prov.path.name})", f"{prov.n_experts} experts, top-{prov.n_used}{mode}"]
    lines += [f"  expert {i}: {name}" for i, name in enumerate(prov.names)]
    return [*lines, f"  (names from {prov.names_from})"]


def _table(prov: Provenance) -> list[str]:
    wide = prov.n_experts > MAX_NORM_COLUMNS
    norm_heads = ["|w| min", "|w| max"] if wide else [f"|w{i}|" for i in range(prov.n_experts)]
    cos_heads = ["cos(0,1)"] if prov.n_experts == 2 else ["max cos", "min cos"]
    heads = ["layer", *norm_heads, *cos_heads, "cond", "flags"]
    rows = [_row(g, wide, len(cos_heads)) for g in prov.layers]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(heads)]

    def line(cells: list[str]) -> str:
        padded = [c.rjust(w) for c, w in zip(cells[:-1], widths, strict=False)]
        return "  ".join([*padded, cells[-1]]).rstrip()

    return [line(heads), *(line(r) for r in rows)]


def _row(g: LayerGates, wide: bool, n_cos: int) -> list[str]:
    norms = [g.norms.min(), g.norms.max()] if wide else list(g.norms)
    off = g.cosines[~np.eye(len(g.norms), dtype=bool)]
    off = off[~np.isnan(off)]
    cos = [f"{off.max():+.3f}", f"{off.min():+.3f}"][:n_cos] if off.size else ["-"] * n_cos
    return [str(g.layer), *(f"{n:.4f}" for n in norms), *cos, _cond(g.condition), _flags(g)]


def _cond(c: float) -> str:
    return "inf" if math.isinf(c) else f"{c:.3g}"


def _flags(g: LayerGates) -> str:
    flags = [f"DEAD gate {e}" for e in g.dead]
    flags += [f"collinear {i}~{j}" for i, j in g.collinear]
    if g.degenerate:
        flags.append(f"cond>{MERGEKIT_COND:g}")
    return ", ".join(flags)


def _summary(prov: Provenance) -> list[str]:
    lines = []
    for e in sorted({e for _, e in prov.dead_gates}):
        layers = [layer for layer, x in prov.dead_gates if x == e]
        lines.append(
            f"DEAD GATE: expert {e} ({prov.names[e]}) has an all-zero router row in layers {_ranges(layers)}: "
            "it is chosen only by ties. Typical of mergekit-moe main between 2024-02-24 and 2024-03-18 "
            "(prompts tokenized as just the start token, so positive and negative gates cancelled)."
        )
    if prov.collinear_layers:
        lines.append(
            f"near-collinear gates (cosine >= {COLLINEAR_COS}) in layers {_ranges(prov.collinear_layers)}: "
            "those experts get nearly the same logit for every token."
        )
    if prov.degenerate_layers:
        lines.append(
            f"condition number > {MERGEKIT_COND:g} (mergekit's degenerate-routing warning) in layers "
            f"{_ranges(prov.degenerate_layers)}."
        )
    return lines or ["no dead gates, no near-collinear gates, every condition number <= 5."]


def _ranges(layers: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0-2, 5, 7-8'."""
    spans: list[list[int]] = []
    for n in layers:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in spans)


def to_json(prov: Provenance) -> dict:
    """The report's numbers as plain JSON values (NaN and inf as null)."""

    def num(x: float) -> float | None:
        return None if not math.isfinite(x) else round(float(x), 6)

    layers = [
        {
            "layer": g.layer,
            "norms": [num(n) for n in g.norms],
            "cosines": [[num(c) for c in row] for row in g.cosines],
            "condition": num(g.condition),
            "dead": list(g.dead),
            "collinear": [list(p) for p in g.collinear],
        }
        for g in prov.layers
    ]
    head = {"path": str(prov.path), "name": prov.model_name, "n_experts": prov.n_experts, "n_used": prov.n_used}
    return (
        head
        | {"expert_names": list(prov.names), "names_from": prov.names_from, "gate_mode": prov.gate_mode}
        | {
            "dead_gates": [list(x) for x in prov.dead_gates],
            "layers": layers,
        }
    )
