"""Decode speed of routing capture, measured side by side in one run (ratios, not wall-time targets).

    python bench/bench_engine.py [--tokens 128] [--rounds 5] [--threads 2]

Variants, interleaved round by round so machine noise hits them alike:
  plain      llama-cpp-python's high-level `Llama` generating greedily (the reference)
  off        moechat's engine with capture off
  python     moechat's engine with the Python eval callback
  fast       moechat's engine with the compiled C callback
Targets: fast >= 0.97 x off; off >= 0.97 x plain.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import llama_cpp.llama
from llama_cpp import Llama

from moechat.engine import cpu_guard
from moechat.engine.engine import Engine
from moechat.engine.types import Sampling
from moechat.gguf.tiny import TinySpec, write_tiny_gguf

# ~5-10 ms per token on one core of the 2-core CI machine: big enough that per-token overheads show
SPEC = TinySpec(
    n_layers=12,
    n_embd=512,
    n_ff=1536,
    n_heads=8,
    n_kv_heads=8,
    n_experts=2,
    n_experts_used=2,
    n_ctx=1024,
    dtype="f16",
    seed=11,
    name="bench-2x",
)
PROMPT = "The lighthouse keeper climbed the stairs and looked out over the sea."


def time_engine(engine: Engine, n: int) -> float:
    """Decode tokens per second, prompt excluded: from the first generated token to the last."""
    stamps = []
    for tok in engine.stream(engine.tokenize(PROMPT), Sampling(temperature=0, max_tokens=n)):
        if not tok.prompt:
            stamps.append(time.perf_counter())
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def plain_llama(path: Path, threads: int) -> Llama:
    """llama-cpp-python's `Llama`, loaded with the CPU guard's choice of extra buffer types as Engine.load is
    (`Llama` takes no such argument: its default model parameters are adjusted while it loads)."""
    extra = cpu_guard.extra_buffers().extra_buffers
    defaults = llama_cpp.llama.llama_cpp.llama_model_default_params

    def guarded() -> llama_cpp.llama_model_params:
        params = defaults()
        params.use_extra_bufts = extra
        return params

    llama_cpp.llama.llama_cpp.llama_model_default_params = guarded
    try:
        return Llama(str(path), n_ctx=1024, n_threads=threads, n_threads_batch=threads, n_gpu_layers=0, verbose=False)
    finally:
        llama_cpp.llama.llama_cpp.llama_model_default_params = defaults


def time_plain(llm: Llama, n: int) -> float:
    llm.reset()
    stamps = []
    for _ in llm.generate(llm.tokenize(PROMPT.encode()), temp=0.0, repeat_penalty=1.0, reset=True):
        stamps.append(time.perf_counter())
        if len(stamps) == n:
            break
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    path = write_tiny_gguf(Path(tempfile.mkdtemp()) / "bench.gguf", SPEC)
    t = args.threads
    plain = plain_llama(path, t)
    engines = {
        m: Engine.load(path, n_ctx=1024, n_threads=t, capture=m, n_gpu_layers=0) for m in ("off", "python", "fast")
    }
    runs: dict[str, Callable[[], float]] = {"plain": lambda: time_plain(plain, args.tokens)}
    runs |= {m: (lambda e=e: time_engine(e, args.tokens)) for m, e in engines.items()}
    for fn in runs.values():  # warm-up
        fn()
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, fn in runs.items():
            rates[name].append(fn())
    med = {name: statistics.median(r) for name, r in rates.items()}
    print(
        f"model: {SPEC.n_layers} layers, n_embd {SPEC.n_embd}, 2 experts top-2, f16; threads {t}; "
        f"{args.tokens} tokens x {args.rounds} rounds (median)"
    )
    print(f"{'variant':<8} {'tok/s':>8} {'ms/tok':>8}  ratio")
    for name in runs:
        base = "plain" if name == "off" else "off"
        ratio = "" if name == "plain" else f"{med[name] / med[base]:.3f} x {base}"
        print(f"{name:<8} {med[name]:8.1f} {1000 / med[name]:8.2f}  {ratio}")
    print(
        f"targets: fast/off >= 0.97 -> {med['fast'] / med['off']:.3f}; off/plain >= 0.97 -> "
        f"{med['off'] / med['plain']:.3f}"
    )


if __name__ == "__main__":
    main()
