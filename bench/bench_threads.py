"""Decode speed of the default thread count (one per physical core, within the CPU quota) against 1 thread, side
by side in one run: rounds interleaved so machine noise hits both alike.

    python bench/bench_threads.py [--tokens 128] [--rounds 4]

Model: bench_engine.py's 12-layer f16 tiny MoE, capture on (as the app runs).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from bench_engine import SPEC, time_engine

from moechat.engine.engine import Engine
from moechat.engine.threads import this_machine
from moechat.gguf.tiny import write_tiny_gguf


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    path = write_tiny_gguf(Path(tempfile.mkdtemp()) / "bench.gguf", SPEC)
    default = Engine.load(path, n_ctx=1024, n_gpu_layers=0)
    engines = {f"default ({default.report.n_threads})": default, "1 thread": Engine.load(path, n_ctx=1024, n_threads=1)}
    for engine in engines.values():  # warm-up
        time_engine(engine, 16)
    rates: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(args.rounds):
        for name, engine in engines.items():
            rates[name].append(time_engine(engine, args.tokens))
    med = {name: statistics.median(r) for name, r in rates.items()}
    budget = this_machine()
    print(f"this machine: {budget.note}; default threads {budget.threads}, prompt evaluation {budget.batch_threads}")
    print(f"model: {SPEC.n_layers} layers, n_embd {SPEC.n_embd}, f16; {args.tokens} tokens x {args.rounds} rounds")
    for name, rate in med.items():
        print(f"{name:<12} {rate:8.1f} tok/s")
    first, one = med[next(iter(med))], med["1 thread"]
    print(f"default / 1 thread: {first / one:.3f} x")


if __name__ == "__main__":
    main()
