"""Decode speed of the demo frankenMoE against the dense SmolLM2 it was built from, side by side in one run.

    python bench/bench_demo.py [--tokens 96] [--rounds 5] [--threads 2]

Both experts run for every token (top-2), so the MoE does twice the FFN work of the dense model.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from moechat.engine.engine import Engine
from moechat.engine.types import Sampling
from moechat.models.demo import demo_model_path, source_path

PROMPT = "<|im_start|>user\nTell me a story about a lighthouse keeper.<|im_end|>\n<|im_start|>assistant\n"


def rate(engine: Engine, n: int) -> float:
    engine.clear()
    stamps = [
        time.perf_counter()
        for t in engine.stream(engine.tokenize(PROMPT), Sampling(temperature=0, max_tokens=n))
        if not t.prompt
    ]
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=96)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    moe = demo_model_path(Path(tempfile.gettempdir()) / "moechat-bench")
    engines = {
        "dense": Engine.load(source_path(), n_ctx=512, n_threads=args.threads, allow_dense=True, capture="off"),
        "demo, capture off": Engine.load(moe, n_ctx=512, n_threads=args.threads, capture="off"),
        "demo, capture on": Engine.load(moe, n_ctx=512, n_threads=args.threads, capture="fast"),
    }
    rates: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(args.rounds):
        for name, engine in engines.items():
            rates[name].append(rate(engine, args.tokens))
    med = {name: statistics.median(r) for name, r in rates.items()}
    print(f"{args.tokens} greedy tokens x {args.rounds} rounds, {args.threads} threads (median)")
    for name, r in med.items():
        print(f"{name:<18} {r:7.1f} tok/s  {r / med['dense']:.3f} x dense")


if __name__ == "__main__":
    main()
