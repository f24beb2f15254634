"""Flagship scale: a random-weight model of PygWin-2x7B's full size, written straight as Q4_K_M, then load time,
memory, prompt-evaluation and decode speed with routing capture off and on, side by side. Opt-in (minutes, ~7 GB):

    python bench/bench_flagship_scale.py [--dir DIR] [--threads N] [--n-gpu-layers N] [--prompt-tokens 64]
                                         [--tokens 16] [--rounds 1] [--keep | --model FILE.gguf]

The model is tiny_gguf.FLAGSHIP at full width: hidden 4096, FFN 11008, 32 heads, 32 layers, 2 experts top-2 and the
32,000-token vocabulary, ~11.1 B parameters. There is no f16 intermediate (it would be ~22 GB): each tensor's blocks
are made and written one at a time (frankenmoe.write_gguf), with llama.cpp's Q4_K_M choices (llama-quant.cpp):
Q4_K everywhere, Q6_K for output.weight and for attn_v and ffn_down in the use_more_bits layers, float32 norms and
routers. The blocks are random but valid: random 4- and 6-bit quants and sub-block scales (a Q4_K sub-block's min
equals its scale and dmin = 7.5 d, so weights are zero-mean), super-block scales chosen so each weight matrix has a
standard deviation of 1/sqrt(fan-in). The text is garbage; the cost is the real model's.

Free disk and memory are checked before writing, and the run refuses clearly when they are short. One read of the
file warms the page cache; then each capture mode is measured in its own child process (clean memory figures; a native
crash is reported, not fatal), the modes taking turns to go first round by round. RSS is split into anonymous memory
(llama.cpp's own buffers, including any repacked copy of the weights) and file-backed pages (the mapped model). The
file is deleted at the end unless --keep (or --model, which measures a file you already have).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from moechat.gguf.tiny import FLAGSHIP, TinySpec, add_metadata
from moechat.gguf.write import Planned, write_gguf

ROOT = Path(__file__).resolve().parent.parent
QT = gguf.GGMLQuantizationType
FULL = dataclasses.replace(
    FLAGSHIP, n_embd=4096, n_ff=11008, n_heads=32, n_kv_heads=32, name="PygWin-2x7B shape (random weights, Q4_K_M)"
)
QK_K = 256
Q4_K_BYTES, Q6_K_BYTES = 144, 210
Q4_SCALES, Q6_SCALES = np.arange(16, 48), np.arange(8, 33)  # the sub-block scales drawn from (6-bit, int8)
GIB = 1 << 30
PROMPT = (
    "The lighthouse keeper climbed the narrow stairs at dusk, as she had every evening for thirty years, and "
    "looked out over the grey water. A ship she did not know was riding at anchor beyond the reef, its lamps dark, "
    "its deck empty. She wrote the hour in her log, then the wind, then the word she had never written before: "
    "strangers. Below her the dog began to bark at something on the rocks that she could not see."
)


def use_more_bits(layer: int, n_layers: int) -> bool:
    """llama-quant.cpp's rule for the layers whose attn_v and ffn_down Q4_K_M keeps at Q6_K."""
    return layer < n_layers // 8 or layer >= 7 * n_layers // 8 or (layer - n_layers // 8) % 3 == 2


def q4_k_m_type(name: str, n_layers: int) -> gguf.GGMLQuantizationType:
    """The type llama.cpp's Q4_K_M gives a llama MoE weight matrix (widths multiples of 256, 2 experts)."""
    if name == "output.weight":
        return QT.Q6_K
    if name.endswith(("attn_v.weight", "ffn_down_exps.weight")) and use_more_bits(int(name.split(".")[1]), n_layers):
        return QT.Q6_K
    return QT.Q4_K


def _f16_bytes(value: float) -> np.ndarray:
    return np.array([value], np.float16).view(np.uint8)


def q4_k_blocks(rng: np.random.Generator, n_blocks: int, fan_in: int) -> np.ndarray:
    """[n_blocks, 144] valid Q4_K blocks (d, dmin, 12 packed 6-bit scales and mins, 128 bytes of 4-bit quants)."""
    blocks = rng.integers(0, 256, size=(n_blocks, Q4_K_BYTES), dtype=np.uint8)  # the quants stay random
    sc = rng.choice(Q4_SCALES.astype(np.uint8), size=(n_blocks, 8))
    d = 1.0 / (np.sqrt(fan_in) * np.sqrt(np.mean(Q4_SCALES**2.0)) * np.std(np.arange(16)))
    blocks[:, 0:2], blocks[:, 2:4] = _f16_bytes(d), _f16_bytes(7.5 * d)  # w = d*sc*q - dmin*min = d*sc*(q - 7.5)
    low, high = sc[:, :4], sc[:, 4:]
    blocks[:, 4:8] = blocks[:, 8:12] = low | ((high >> 4) << 6)  # scales 0-3 and mins 0-3 (mins equal the scales)
    blocks[:, 12:16] = (high & 0xF) | ((high & 0xF) << 4)  # low nibbles of scales 4-7 and of mins 4-7
    return blocks


def q6_k_blocks(rng: np.random.Generator, n_blocks: int, fan_in: int) -> np.ndarray:
    """[n_blocks, 210] valid Q6_K blocks (128 bytes low bits, 64 high bits, 16 int8 scales, d)."""
    blocks = rng.integers(0, 256, size=(n_blocks, Q6_K_BYTES), dtype=np.uint8)  # 6-bit quants: w = d*sc*(q - 32)
    blocks[:, 192:208] = rng.choice(Q6_SCALES.astype(np.int8), size=(n_blocks, 16)).view(np.uint8)
    d = 1.0 / (np.sqrt(fan_in) * np.sqrt(np.mean(Q6_SCALES**2.0)) * np.sqrt(np.mean((np.arange(64) - 32.0) ** 2)))
    blocks[:, 208:210] = _f16_bytes(d)
    return blocks


def _quantized(shape: tuple[int, ...], qtype: gguf.GGMLQuantizationType, seed: list[int]) -> np.ndarray:
    """Random blocks for a weight of numpy shape `shape` (last axis = fan-in), as bytes in the GGUF byte shape."""
    rows, fan_in = int(np.prod(shape[:-1])), shape[-1]
    make = q6_k_blocks if qtype == QT.Q6_K else q4_k_blocks
    blocks = make(np.random.default_rng(seed), rows * fan_in // QK_K, fan_in)
    return blocks.reshape(gguf.quant_shape_to_byte_shape(shape, qtype))


def _f32(values: np.ndarray) -> np.ndarray:
    return values.astype(np.float32).view(np.uint8)


def plan(spec: TinySpec, n_vocab: int) -> list[Planned]:
    """Every tensor of the model, made only when written: name, type, byte shape and a maker."""
    e, f, x = spec.n_embd, spec.n_ff, spec.n_experts
    kv = e // spec.n_heads * spec.n_kv_heads
    weights = {"token_embd.weight": (n_vocab, e)}
    norms = ["output_norm.weight"]
    routers = []
    for i in range(spec.n_layers):
        b = f"blk.{i}."
        weights |= {b + "attn_q.weight": (e, e), b + "attn_k.weight": (kv, e), b + "attn_v.weight": (kv, e)}
        weights |= {b + "attn_output.weight": (e, e), b + "ffn_gate_exps.weight": (x, f, e)}
        weights |= {b + "ffn_up_exps.weight": (x, f, e), b + "ffn_down_exps.weight": (x, e, f)}
        norms += [b + "attn_norm.weight", b + "ffn_norm.weight"]
        routers.append(b + "ffn_gate_inp.weight")
    weights["output.weight"] = (n_vocab, e)
    out: list[Planned] = []
    for k, (name, shape) in enumerate(weights.items()):
        qtype = QT.Q4_K if name == "token_embd.weight" else q4_k_m_type(name, spec.n_layers)
        make = lambda s=shape, q=qtype, k=k: _quantized(s, q, [spec.seed, k])  # noqa: E731
        out.append(Planned(name, qtype, gguf.quant_shape_to_byte_shape(shape, qtype), make))
    for k, name in enumerate(norms):
        make = lambda k=k: _f32(1.0 + 0.1 * np.random.default_rng([spec.seed, 10_000 + k]).standard_normal(e))  # noqa: E731
        out.append(Planned(name, QT.F32, (e * 4,), make))
    scale = 4.0 / np.sqrt(e)  # as tiny_gguf: router logits spread enough that the probabilities vary
    for k, name in enumerate(routers):
        make = lambda k=k: _f32(scale * np.random.default_rng([spec.seed, 20_000 + k]).standard_normal((x, e)))  # noqa: E731
        out.append(Planned(name, QT.F32, (x, e * 4), make))
    return out


def metadata(spec: TinySpec) -> tuple[list[tuple[str, Any, Any, Any]], int]:
    """tiny_gguf's metadata for `spec`, file type Q4_K_M, as write_gguf's (key, value, type, item type); vocab size."""
    staging = gguf.GGUFWriter(None, "llama")
    n_vocab = len(add_metadata(staging, spec))
    q4_k_m = gguf.GGUFValue(gguf.LlamaFileType.MOSTLY_Q4_K_M, gguf.GGUFValueType.UINT32)
    values = staging.kv_data[0] | {"general.file_type": q4_k_m}
    kvs = [(k, v.value, v.type, v.sub_type) for k, v in values.items() if k != "general.architecture"]
    return kvs, n_vocab


def write_model(path: Path, spec: TinySpec = FULL, progress: bool = False) -> Path:
    kvs, n_vocab = metadata(spec)
    write_gguf(path, kvs, plan(spec, n_vocab), progress)
    return path


def model_bytes(spec: TinySpec = FULL) -> int:
    return sum(p.nbytes for p in plan(spec, metadata(spec)[1]))


def refusal(folder: Path, size: int, offloaded: bool) -> str | None:
    """Why this machine cannot run the benchmark (disk or memory short), or None."""
    free = shutil.disk_usage(folder).free
    if free < size + GIB:
        return (
            f"refusing: the model needs {size / GIB:.1f} GiB (+1 GiB spare) at {folder}, which has "
            f"{free / GIB:.1f} GiB free; pass --dir on a bigger disk"
        )
    available = _meminfo().get("MemAvailable", 0)
    need = 2 * GIB if offloaded else size + 2 * GIB  # CPU: the weights stay in the page cache, plus KV and buffers
    if available and available < need:
        return f"refusing: running it needs ~{need / GIB:.1f} GiB of memory and {available / GIB:.1f} GiB is available"
    return None


def _meminfo() -> dict[str, int]:
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        return {}
    return {k: int(v.split()[0]) * 1024 for k, v in (line.split(":", 1) for line in lines)}


def _rss() -> dict[str, float]:
    """This process's resident memory in GiB: total, anonymous (owned) and file-backed (mapped model pages)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {k: int(fields[k].split()[0]) * 1024 / GIB for k in ("VmRSS", "RssAnon", "RssFile", "VmHWM") if k in fields}


def warm_page_cache(path: Path, chunk: int = 64 << 20) -> int:
    """Read the file once, so that every measured load finds it in the page cache alike; returns the bytes read."""
    total = 0
    with path.open("rb", buffering=0) as fh:
        while n := len(fh.read(chunk)):
            total += n
    return total


# ---- one capture mode, in a child process ---------------------------------------------------------------------
def measure(model: Path, capture: str, args: argparse.Namespace) -> dict[str, Any]:
    from moechat.engine.engine import Engine
    from moechat.engine.types import Sampling

    start = time.perf_counter()
    engine = Engine.load(
        model, n_ctx=args.n_ctx, n_threads=args.threads, n_gpu_layers=args.n_gpu_layers, capture=capture
    )
    load_s = time.perf_counter() - start
    rss_load = _rss()
    ids = engine.tokenize(PROMPT * 4)[: args.prompt_tokens]
    prompt_s, stamps = None, []
    start = time.perf_counter()
    for tok in engine.stream(ids, Sampling(temperature=0, max_tokens=args.tokens)):
        if tok.prompt and prompt_s is None:
            prompt_s = time.perf_counter() - start  # the prompt is evaluated before its first token is released
        elif not tok.prompt:
            stamps.append(time.perf_counter())
    # the last token is decoded only when capture reads its routing: time the tokens both modes decode; the median
    # interval, so that a burst of load from elsewhere on a shared machine moves it less than the mean
    decode = 1.0 / float(np.median(np.diff(stamps[:-1])))
    rss_run, report = _rss(), engine.report
    engine.close()
    return {
        "capture": report.capture,
        "threads": report.n_threads,
        "gpu_layers": report.n_gpu_layers,
        "load_s": load_s,
        "rss_load": rss_load,
        "rss_run": rss_run,
        "prompt_tokens": len(ids),
        "prompt_tps": len(ids) / prompt_s,
        "decode_tokens": len(stamps),
        "decode_tps": decode,
    }


def run_child(model: Path, capture: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", capture, "--model", str(model), "--n-ctx", str(args.n_ctx)]
    cmd += ["--prompt-tokens", str(args.prompt_tokens), "--tokens", str(args.tokens)]
    cmd += ["--threads", str(args.threads)] if args.threads else []
    cmd += ["--n-gpu-layers", str(args.n_gpu_layers)] if args.n_gpu_layers is not None else []
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        how = f"died by signal {-proc.returncode}" if proc.returncode < 0 else f"exited with {proc.returncode}"
        tail = (proc.stderr.strip().splitlines() or [""])[-1]
        return {"capture": capture, "error": f"{how}: {tail}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- report ---------------------------------------------------------------------------------------------------
ROWS = (  # label, figure, format
    ("load, s", lambda r: r["load_s"], "{:.2f}"),
    ("RSS after load, GiB", lambda r: r["rss_load"]["VmRSS"], "{:.2f}"),
    ("  anonymous", lambda r: r["rss_load"]["RssAnon"], "{:.2f}"),
    ("  file-backed (mapped model)", lambda r: r["rss_load"]["RssFile"], "{:.2f}"),
    ("RSS after the run, GiB", lambda r: r["rss_run"]["VmRSS"], "{:.2f}"),
    ("  anonymous", lambda r: r["rss_run"]["RssAnon"], "{:.2f}"),
    ("  file-backed (mapped model)", lambda r: r["rss_run"]["RssFile"], "{:.2f}"),
    ("peak RSS, GiB", lambda r: r["rss_run"]["VmHWM"], "{:.2f}"),
    ("prompt eval, tokens/s", lambda r: r["prompt_tps"], "{:.2f}"),
    ("decode, tokens/s", lambda r: r["decode_tps"], "{:.3f}"),
)


def table(results: dict[str, list[dict[str, Any]]]) -> str:
    """A column per capture mode (medians over rounds), a row per figure, and the ratio of the second to the first."""
    ok = {m: [r for r in runs if "error" not in r] for m, runs in results.items()}
    shown = [f"capture {next((r['capture'] for r in runs), m)}" for m, runs in ok.items()]  # auto: fast or python
    lines = [f"{'':30}" + "".join(f"{c:>16}" for c in shown) + f"{'ratio':>8}"]
    for label, get, fmt in ROWS:
        values = [float(np.median([get(r) for r in runs])) if runs else None for runs in ok.values()]
        cells = [fmt.format(v) if v is not None else "failed" for v in values]
        ratio = f"{values[1] / values[0]:.3f}" if len(values) == 2 and None not in values and values[0] else ""
        lines.append(f"{label:30}" + "".join(f"{c:>16}" for c in cells) + f"{ratio:>8}")
    lines += [f"capture {m}: {r['error']}" for m, runs in results.items() for r in runs if "error" in r]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="where to write the model")
    ap.add_argument("--model", type=Path, help="measure this file instead of writing one (kept)")
    ap.add_argument("--keep", action="store_true", help="keep the written model")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: moechat's)")
    ap.add_argument("--n-gpu-layers", type=int, default=None, help="layers to offload (default: all when possible)")
    ap.add_argument("--n-ctx", type=int, default=512)
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=16, help="tokens to decode (at least 3)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--child", choices=["off", "auto"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.model, args.child, args)))
        return
    if args.tokens < 3:
        ap.error("--tokens must be at least 3")
    model = args.model
    if model is None:
        import llama_cpp

        size = model_bytes()
        offloaded = bool(llama_cpp.llama_supports_gpu_offload()) and args.n_gpu_layers != 0
        reason = refusal(args.dir, size, offloaded)
        if reason:
            sys.exit(reason)
        model = args.dir / "flagship-scale.Q4_K_M.gguf"
        print(f"writing {model} ({size / GIB:.2f} GiB, random Q4_K_M blocks)", flush=True)
        start = time.perf_counter()
        write_model(model, progress=True)
        took = time.perf_counter() - start
        print(f"written in {took:.1f} s ({size / took / 1e6:.0f} MB/s)", flush=True)
    try:
        start = time.perf_counter()
        read = warm_page_cache(model)
        print(f"page cache warmed: read {read / GIB:.2f} GiB in {time.perf_counter() - start:.1f} s", flush=True)
        results: dict[str, list[dict[str, Any]]] = {"off": [], "auto": []}
        for round_no in range(args.rounds):
            for mode in list(results)[:: 1 if round_no % 2 == 0 else -1]:  # alternate which mode goes first
                r = run_child(model, mode, args)
                results[mode].append(r)
                got = r.get("error") or (
                    f"load {r['load_s']:.1f} s, prompt {r['prompt_tps']:.2f} tokens/s, "
                    f"decode {r['decode_tps']:.3f} tokens/s"
                )
                print(f"capture {mode}: {got}", flush=True)
        first = next((r for rs in results.values() for r in rs if "error" not in r), {})
        print(
            f"\n{model.name}: {model.stat().st_size / GIB:.2f} GiB; prompt {first.get('prompt_tokens')} tokens, "
            f"decode {first.get('decode_tokens')} tokens; threads {first.get('threads')}, "
            f"GPU layers {first.get('gpu_layers')}; medians of {args.rounds} round(s); "
            f"load average {os.getloadavg()[1]:.1f} (5 min) on {os.cpu_count()} CPUs\n"
        )
        print(table(results))
    finally:
        if args.model is None and not args.keep:
            model.unlink(missing_ok=True)
            print(f"\nremoved {model}")


if __name__ == "__main__":
    main()
