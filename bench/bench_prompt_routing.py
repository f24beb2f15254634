"""What routing for every prompt token costs: prompt evaluation with outputs for all tokens (so the last
layer's routing exists for prompt tokens) vs the last token only, side by side in one run.

    python bench/bench_prompt_routing.py [--tokens 1500] [--rounds 3] [--model PATH]

Default model: the demo frankenMoE (SmolLM2-135M x2, vocabulary 49,152: the output head is a large
share of a small model's work, so this is close to the worst case).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from moechat.engine.engine import Engine
from moechat.engine.types import Sampling

TEXT = (
    "The harbour master kept a ledger of every ship that came and went, and in the margins he drew the "
    "weather: a sun for calm days, a spiral for storms, and a small lantern whenever the lighthouse failed. "
)


def model_path(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    from moechat.models.demo import demo_model_path

    return demo_model_path(Path(tempfile.gettempdir()) / "moechat-bench")


def prompt_seconds(engine: Engine, ids: list[int]) -> float:
    start = time.perf_counter()
    for tok in engine.stream(ids, Sampling(temperature=0, max_tokens=1)):
        if not tok.prompt:
            break
    elapsed = time.perf_counter() - start
    engine.clear()  # a cold cache for the next round
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=1500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--model")
    args = ap.parse_args()
    path = model_path(args.model)
    engines = {
        "all outputs": Engine.load(path, n_ctx=args.tokens + 64, full_prompt_routing=True),
        "last only": Engine.load(path, n_ctx=args.tokens + 64, full_prompt_routing=False),
    }
    some = next(iter(engines.values()))
    ids = some.tokenize(TEXT * 200)[: args.tokens]
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(args.rounds):
        for name, engine in engines.items():
            times[name].append(prompt_seconds(engine, ids))
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"model {path.name}; prompt of {len(ids)} tokens; median of {args.rounds} rounds")
    for name, t in med.items():
        print(f"{name:<12} {t:7.3f} s  {len(ids) / t:8.1f} tok/s")
    print(f"cost of last-layer routing for every prompt token: {med['all outputs'] / med['last only']:.3f} x")


if __name__ == "__main__":
    main()
