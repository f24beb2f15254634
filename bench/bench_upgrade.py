"""Upgrading a pre-2024 split-expert GGUF: time and MB/s for a ~1 GB file, beside a plain copy of the same file
(the floor: same bytes read and written), side by side in one run, rounds interleaved.

    python bench/bench_upgrade.py [--layers 11] [--rounds 3] [--dir DIR]

The file is a legacy-layout llama MoE of n_embd 2048, n_ff 5632, 2 experts, every matrix Q8_0 (random quants with
sane scales), routers F32, written under --dir (default: the temp dir) and deleted afterwards with its outputs.
Both sides read a source that sits in the page cache and write through it (no fsync), as a user's first upgrade
right after a download does.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import gguf
import numpy as np

from moechat.gguf.tiny import TinySpec, write_tiny_gguf
from moechat.gguf.upgrade import upgrade
from moechat.gguf.write import Planned, reader_kvs, write_gguf

QT = gguf.GGMLQuantizationType
N_EMBD, N_FF, N_EXPERTS, N_HEADS = 2048, 5632, 2, 16


def q8_0(name: str, rows: int, cols: int, seed: int) -> Planned:
    """A Q8_0 matrix of random quants whose block scales are normal f16 numbers (~1e-3)."""
    block, size = gguf.GGML_QUANT_SIZES[QT.Q8_0]
    shape = (rows, cols // block * size)

    def make() -> np.ndarray:
        data = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
        blocks = data.reshape(rows, -1, size)
        blocks[:, :, 0], blocks[:, :, 1] = 0x00, 0x14  # f16 scale 2**-10
        return data

    return Planned(name, QT.Q8_0, shape, make)


def f32(name: str, *shape: int, seed: int) -> Planned:
    def make() -> np.ndarray:
        return np.random.default_rng(seed).standard_normal(shape).astype(np.float32).view(np.uint8)

    return Planned(name, QT.F32, (*shape[:-1], shape[-1] * 4), make)


def write_legacy(path: Path, n_layers: int) -> Path:
    """The legacy file: a tiny model's metadata (tokenizer included) with the large shape's hyperparameters."""
    tiny = write_tiny_gguf(path.with_suffix(".meta.gguf"), TinySpec(n_layers=1, expert_layout="split"))
    shape = {
        "llama.block_count": n_layers,
        "llama.embedding_length": N_EMBD,
        "llama.feed_forward_length": N_FF,
        "llama.attention.head_count": N_HEADS,
        "llama.attention.head_count_kv": N_HEADS,
        "llama.rope.dimension_count": N_EMBD // N_HEADS,
        "general.file_type": int(gguf.LlamaFileType.MOSTLY_Q8_0),
        "general.name": f"legacy {N_EXPERTS}x bench",
    }
    kvs = [(k, shape.get(k, v), t, s) for k, v, t, s in reader_kvs(gguf.GGUFReader(tiny))]
    n_vocab = len(next(v for k, v, _, _ in kvs if k == "tokenizer.ggml.tokens"))
    tiny.unlink()
    seed = iter(range(10**6))
    plan = [q8_0("token_embd.weight", n_vocab, N_EMBD, next(seed)), f32("output_norm.weight", N_EMBD, seed=0)]
    plan.append(q8_0("output.weight", n_vocab, N_EMBD, next(seed)))
    for i in range(n_layers):
        b = f"blk.{i}."
        plan += [f32(b + "attn_norm.weight", N_EMBD, seed=next(seed)), f32(b + "ffn_norm.weight", N_EMBD, seed=0)]
        plan += [q8_0(b + f"attn_{m}.weight", N_EMBD, N_EMBD, next(seed)) for m in ("q", "k", "v", "output")]
        plan.append(f32(b + "ffn_gate_inp.weight", N_EXPERTS, N_EMBD, seed=next(seed)))
        for x in range(N_EXPERTS):
            plan.append(q8_0(b + f"ffn_gate.{x}.weight", N_FF, N_EMBD, next(seed)))
            plan.append(q8_0(b + f"ffn_up.{x}.weight", N_FF, N_EMBD, next(seed)))
            plan.append(q8_0(b + f"ffn_down.{x}.weight", N_EMBD, N_FF, next(seed)))
    write_gguf(path, kvs, plan, progress=False)
    return path


def timed(fn: object, *args: object) -> float:
    start = time.perf_counter()
    fn(*args)  # type: ignore[operator]
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=11, help="11 layers: about 1.0 GB")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="moechat-bench-upgrade-", dir=args.dir))
    try:
        src = write_legacy(work / "legacy.gguf", args.layers)
        mb = src.stat().st_size / 1e6
        print(f"legacy file: {mb:,.0f} MB, {args.layers} layers, {N_EXPERTS} experts, Q8_0")
        sides = {
            "plain copy": lambda out: shutil.copyfile(src, out),
            "upgrade": lambda out: upgrade(src, out, progress=False),
        }
        times: dict[str, list[float]] = {name: [] for name in sides}
        for _ in range(args.rounds):
            for name, run in sides.items():
                out = work / "out.gguf"
                times[name].append(timed(run, out))
                out.unlink()
        copy = statistics.median(times["plain copy"])
        for name, seconds in times.items():
            s = statistics.median(seconds)
            print(f"{name:<11} median {s:6.2f} s  {mb / s:7,.0f} MB/s  x{s / copy:.2f} of the copy's time")
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
