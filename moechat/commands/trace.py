"""`python -m moechat trace MODEL --prompt TEXT`: per-token routing of a prompt and its continuation.

Writes one JSON document: every token the model *read* at each position (the prompt's, then each
generated token fed back), with the router's probabilities and selected experts at every layer.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from moechat.commands.model_arg import add_data_dir_argument, add_model_argument, resolve_spec
from moechat.engine.engine import Engine
from moechat.engine.types import Sampling, Token
from moechat.gguf.info import expert_labels
from moechat.routing.metrics import Routing


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m moechat trace", description=__doc__.splitlines()[0])
    add_model_argument(p, "model", what="the MoE model to trace")
    p.add_argument("--prompt", required=True, help="text, tokenized as the model's tokenizer does (with BOS)")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--exact", action="store_true", help="float32 KV cache and attention, for comparisons")
    p.add_argument("--n-ctx", type=int, default=4096)
    p.add_argument("--out", type=Path, help="write the JSON here instead of stdout")
    add_data_dir_argument(p)
    return p.parse_args(argv)


def token_record(tok: Token, routing: Routing) -> dict[str, Any]:
    """One read token and its routing (the token's own, known to be there)."""
    probs = [[round(float(p), 7) for p in layer] for layer in routing.probs]
    experts = [[int(e) for e in layer] for layer in routing.experts]
    return {
        "pos": tok.pos,
        "id": tok.id,
        "text": tok.piece.decode("utf-8", "replace"),
        "prompt": tok.prompt,
        "probs": probs,
        "experts": experts,
    }


def trace_document(engine: Engine, tokens: Iterable[Token]) -> dict[str, Any]:
    """The trace JSON: only tokens that were read (the final sampled token never is)."""
    info = engine.info
    return {
        "model": str(info.path),
        "n_layers": info.n_layers,
        "n_experts": info.n_experts,
        "k": info.n_experts_used,
        "expert_names": list(expert_labels(info)),
        "tokens": [token_record(t, t.routing) for t in tokens if t.routing is not None],
    }


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    sampling = Sampling(temperature=args.temperature, seed=args.seed, max_tokens=args.max_tokens)
    with Engine.load(resolve_spec(args.model, args.data_dir), n_ctx=args.n_ctx, exact=args.exact) as engine:
        doc = trace_document(engine, engine.stream(engine.tokenize(args.prompt), sampling))
    text = json.dumps(doc, ensure_ascii=False)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    else:
        sys.stdout.write(text + "\n")
    return 0
