"""What turning ggml's extra CPU buffer types off costs: prompt evaluation with `use_extra_bufts` on vs off, for
Q4_0 and Q4_K_M, side by side in one run (rounds interleaved so machine noise hits every variant alike).

    python bench/bench_extra_buffers.py [--tokens 512] [--rounds 3] [--layers 8]

The CPU path guard turns them off only where the probe died with them on; this says what that costs where both
paths work. Extra buffer types are ggml's AMX kernels (CPUs with AMX) and weight repacking (e.g. Q4_0 and Q4_K
as 8x8 interleaved blocks with AVX2); without them the plain CPU kernels run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from moechat.engine import cpu_guard
from moechat.engine.engine import Engine
from moechat.engine.quantize import quantize
from moechat.engine.types import Sampling
from moechat.gguf.tiny import TinySpec, write_tiny_gguf

TEXT = (
    "The harbour master kept a ledger of every ship that came and went, and in the margins he drew the "
    "weather: a sun for calm days, a spiral for storms, and a small lantern whenever the lighthouse failed. "
)
QUANTS = ("Q4_0", "Q4_K_M")


def spec(layers: int) -> TinySpec:
    """Wide enough that matmuls dominate (every dimension a multiple of 256, as the K-quants need)."""
    return TinySpec(
        n_layers=layers,
        n_embd=1024,
        n_ff=2816,
        n_heads=16,
        n_kv_heads=8,
        n_experts=2,
        n_experts_used=2,
        n_ctx=1024,
        dtype="f16",
        seed=21,
        name="bench-extra-buffers",
    )


def load(path: Path, extra_buffers: bool, n_ctx: int) -> Engine:
    os.environ[cpu_guard.ENV] = "on" if extra_buffers else "off"  # the guard's override, read at load
    try:
        return Engine.load(path, n_ctx=n_ctx, capture="off", n_gpu_layers=0)
    finally:
        del os.environ[cpu_guard.ENV]


def prompt_rate(engine: Engine, ids: list[int]) -> float:
    """Prompt tokens per second, from a cold cache."""
    engine.clear()
    start = time.perf_counter()
    for tok in engine.stream(ids, Sampling(temperature=0, max_tokens=1)):
        if not tok.prompt:
            break
    return len(ids) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--layers", type=int, default=8)
    args = ap.parse_args()
    os.environ.pop(cpu_guard.ENV, None)
    verdict = cpu_guard.extra_buffers()
    print(f"this machine's probe: {verdict.note}")
    folder = Path(tempfile.mkdtemp(prefix="moechat-bench-"))
    s = spec(args.layers)
    f16 = write_tiny_gguf(folder / "bench.F16.gguf", s)
    models = {q: quantize(f16, folder / f"bench.{q}.gguf", q).path for q in QUANTS}
    f16.unlink()
    n_ctx = args.tokens + 64
    engines = {(q, on): load(p, on, n_ctx) for q, p in models.items() for on in (True, False)}
    ids = next(iter(engines.values())).tokenize(TEXT * 100)[: args.tokens]
    for engine in engines.values():  # warm-up: page the weights in
        prompt_rate(engine, ids[:64])
    rates: dict[tuple[str, bool], list[float]] = {k: [] for k in engines}
    for _ in range(args.rounds):
        for key, engine in engines.items():
            rates[key].append(prompt_rate(engine, ids))
    med = {k: statistics.median(r) for k, r in rates.items()}
    threads = next(iter(engines.values())).report.n_threads_batch
    print(
        f"model: {s.n_layers} layers, n_embd {s.n_embd}, n_ff {s.n_ff}, 2 experts top-2; prompt {len(ids)} tokens; "
        f"{threads} threads; median of {args.rounds} interleaved rounds"
    )
    print(f"{'quant':<8} {'on tok/s':>9} {'off tok/s':>10}  off/on")
    for q in QUANTS:
        on, off = med[(q, True)], med[(q, False)]
        print(f"{q:<8} {on:9.1f} {off:10.1f}  {off / on:.3f}")
    for engine in engines.values():
        engine.close()
    for p in models.values():
        p.unlink()
    folder.rmdir()


if __name__ == "__main__":
    main()
