"""Many visitors at once on the demo model: continuous batching beside today's queue, side by side in one run.

    python bench/bench_parallel.py [--tokens 64] [--rounds 3] [--streams 1,2,4,8] [--threads N]

For each number of concurrent streams k, k threads start together, each streaming its own prompt (greedy,
`--tokens` tokens, routing capture on), against two engines loaded from the same file:
  queued    n_parallel=1: the streams wait for each other, one reply at a time (the behaviour before batching)
  batched   n_parallel=max(k): one context decodes every running stream together
Rounds interleave the variants so machine noise hits them alike; caches are cleared before every run.
Printed per k (medians over rounds): aggregate generated tokens/s, its ratio to one batched stream and to the
queued engine, time to first token (median and worst stream), and fairness: when the first stream finishes,
the fewest tokens any stream has received over the most. Targets: 8 batched streams >= 3x the aggregate of one
stream; fairness >= 0.67. Last, the duration of llama.cpp's decode steps that carry one token of each of k
streams: k x (one-token step) / (k-token step) is the most any batching can gain on this machine's kernels.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from moechat.engine.batch_layout import BatchLayout
from moechat.engine.engine import Engine
from moechat.engine.types import Sampling
from moechat.models.demo import demo_model_path

TOPICS = ["a lighthouse keeper", "a dragon in a library", "the first train to the moon", "a cat who runs a bakery"]
TOPICS += ["two rival chess clocks", "a storm over the harbour", "the last bookshop in town", "a robot gardener"]


def prompt(i: int) -> str:
    return f"<|im_start|>user\nTell me a story about {TOPICS[i % len(TOPICS)]}.<|im_end|>\n<|im_start|>assistant\n"


@dataclass
class Run:
    """One run of k streams: per stream its token arrival times (seconds since the start), and the duration of
    each decode step that carried one generated token of each of the k streams (batched engine only)."""

    arrivals: list[list[float]]
    steps: list[float]

    @property
    def seconds(self) -> float:
        return max(a[-1] for a in self.arrivals)

    @property
    def rate(self) -> float:
        return sum(len(a) for a in self.arrivals) / self.seconds

    @property
    def first_tokens(self) -> list[float]:
        return [a[0] for a in self.arrivals]

    @property
    def fairness(self) -> float:
        """Tokens received when the first stream finished: fewest over most."""
        first_done = min(a[-1] for a in self.arrivals)
        got = [sum(t <= first_done for t in a) for a in self.arrivals]
        return min(got) / max(got)


def run(engine: Engine, k: int, tokens: int) -> Run:
    engine.clear()
    ids = [engine.tokenize(prompt(i)) for i in range(k)]
    arrivals: list[list[float]] = [[] for _ in range(k)]
    start = threading.Barrier(k + 1)
    t0 = 0.0
    calls: list[tuple[float, bool]] = []  # (time, whether the call was k generated tokens, one per stream)

    def on_call(layout: BatchLayout, _: object) -> None:
        calls.append((time.perf_counter(), len(layout) == len(set(layout.seqs)) == k))

    def stream(i: int) -> None:
        start.wait()
        for tok in engine.stream(ids[i], Sampling(temperature=0, max_tokens=tokens)):
            if not tok.prompt and tok.id >= 0:
                arrivals[i].append(time.perf_counter() - t0)

    with engine.watch(on_call=on_call):
        threads = [threading.Thread(target=stream, args=(i,)) for i in range(k)]
        for t in threads:
            t.start()
        t0 = time.perf_counter()
        start.wait()
        for t in threads:
            t.join()
    steps = [b - a for (a, full_a), (b, full_b) in itertools.pairwise(calls) if full_a and full_b]
    return Run(arrivals, steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--streams", default="1,2,4,8")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: the engine's)")
    args = ap.parse_args()
    ks = [int(k) for k in args.streams.split(",")]
    path = demo_model_path(Path(tempfile.gettempdir()) / "moechat-bench")
    options = {"n_ctx": 512, "n_threads": args.threads}
    engines = {
        "queued": Engine.load(path, n_parallel=1, **options),
        "batched": Engine.load(path, n_parallel=max(ks), **options),
    }
    runs: dict[tuple[str, int], list[Run]] = {}
    for engine in engines.values():  # warm-up: pages in, graphs reserved
        run(engine, 1, 4)
    for _ in range(args.rounds):
        for k in ks:
            for name, engine in engines.items():
                runs.setdefault((name, k), []).append(run(engine, k, args.tokens))
    report = engines["batched"].report
    print(f"demo model, {args.tokens} greedy tokens per stream, {args.rounds} rounds (medians), ", end="")
    print(f"{report.n_threads} threads ({report.n_threads_batch} for batches), capture {report.capture}")
    one = statistics.median(r.rate for r in runs[("batched", 1)])
    head = ("", "k", "tok/s", "x 1 stream", "x queued", "ttft med", "ttft max", "fair")
    print("{:<8} {:>2} {:>7} {:>10} {:>9} {:>9} {:>9} {:>5}".format(*head))
    for k in ks:
        queued = statistics.median(r.rate for r in runs[("queued", k)])
        for name in engines:
            rs = runs[(name, k)]
            rate = statistics.median(r.rate for r in rs)
            ttft = statistics.median(statistics.median(r.first_tokens) for r in rs)
            worst = statistics.median(max(r.first_tokens) for r in rs)
            fair = statistics.median(r.fairness for r in rs)
            print(
                f"{name:<8} {k:>2} {rate:7.1f} {rate / one:10.2f} {rate / queued:9.2f} {ttft:8.2f}s {worst:8.2f}s "
                f"{fair:5.2f}"
            )
    step = {k: statistics.median(t for r in runs[("batched", k)] for t in r.steps) for k in ks}
    print("llama.cpp's decode step with one generated token of each of k streams (batched engine, median):")
    for k in ks:
        print(f"  k={k}: {1000 * step[k]:6.1f} ms = {step[k] / step[ks[0]]:4.2f} x k={ks[0]}", end="")
        print(f"; the most batching can give: {k * step[ks[0]] / step[k]:4.2f} x" if ks[0] == 1 else "")
    for engine in engines.values():
        engine.close()


if __name__ == "__main__":
    main()
