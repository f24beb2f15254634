"""`python -m moechat.engine.cpu_probe FOLDER on|off`: the child process of the CPU path guard (cpu_guard.py).

Writes a tiny quantized MoE into FOLDER (layer 0 Q8_0, layer 1 Q4_0, every dimension a multiple of 256 so
that ggml's AMX kernels and weight repacking both take these tensors), loads it on the CPU with ggml's extra
buffer types on or off, and decodes one batch of several tokens: on CPUs whose AMX path faults, that first
quantized matmul over two or more tokens is where the process dies (SIGILL). Exits 0 when the batch decodes.

Test hook, to simulate on a sound CPU what the guard must survive: MOECHAT_CPU_PROBE_FAULT=extra makes the
probe kill itself with SIGILL at the decode when extra buffer types are on (a CPU whose AMX path faults), =all
whether they are on or not (a build carrying instructions the CPU lacks); =exit exits with status 3 there and
=hang sleeps there (probes that fail without a signal); =mixed dies by SIGILL with them and exits 3 without.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from pathlib import Path

from moechat.gguf.tiny import TinySpec, write_tiny_gguf

FAULT_ENV = "MOECHAT_CPU_PROBE_FAULT"
FAULTS = ("", "extra", "all", "exit", "hang", "mixed")
PROBE_SPEC = TinySpec(
    n_layers=2,
    n_embd=256,
    n_ff=512,
    n_heads=4,
    n_kv_heads=4,
    n_experts=2,
    n_experts_used=2,
    n_ctx=256,
    seed=13,
    name="moechat cpu probe",
    quants=("Q8_0", "Q4_0"),
)
PROMPT = b"Once upon a time the probe read these words"
N_TOKENS = 8


def _simulated_fault(extra_buffers: bool) -> None:
    """The test hook (see the module's doc): act out a failure at the point where a real CPU would fail."""
    fault = os.environ.get(FAULT_ENV, "")
    if fault not in FAULTS:
        raise SystemExit(f"{FAULT_ENV} must be one of {', '.join(FAULTS[1:])}; got {fault!r}")
    if fault == "all" or (fault in ("extra", "mixed") and extra_buffers):
        os.kill(os.getpid(), signal.SIGILL)
    elif fault in ("exit", "mixed"):
        raise SystemExit(3)
    elif fault == "hang":
        time.sleep(3600)


def probe(folder: Path, extra_buffers: bool) -> None:
    """Load and decode; returns when the batch decoded, raises SystemExit when llama.cpp reports an error."""
    import llama_cpp
    import llama_cpp._internals as internals
    import llama_cpp._logger

    llama_cpp._logger.logger.setLevel(logging.ERROR)  # llama.cpp's load chatter stays out of the pipe
    path = write_tiny_gguf(folder / "probe.gguf", PROBE_SPEC)
    mparams = llama_cpp.llama_model_default_params()
    mparams.n_gpu_layers = 0
    mparams.use_extra_bufts = extra_buffers
    model = internals.LlamaModel(path_model=str(path), params=mparams, verbose=False)
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx = PROBE_SPEC.n_ctx
    cparams.n_batch = cparams.n_ubatch = N_TOKENS
    cparams.n_threads = cparams.n_threads_batch = 1
    ctx = internals.LlamaContext(model=model, params=cparams, verbose=False)
    tokens = model.tokenize(PROMPT, True, False)[:N_TOKENS]
    batch = internals.LlamaBatch(n_tokens=N_TOKENS, embd=0, n_seq_max=1, verbose=False)
    batch.set_batch(tokens, n_past=0, logits_all=False)
    _simulated_fault(extra_buffers)
    rc = llama_cpp.llama_decode(ctx.ctx, batch.batch)
    if rc != 0:
        raise SystemExit(f"llama_decode returned {rc}")


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] not in ("on", "off"):
        print("usage: python -m moechat.engine.cpu_probe FOLDER on|off", file=sys.stderr)
        return 2
    if sys.platform != "win32":
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a faulting probe leaves no core file behind
    probe(Path(argv[0]), argv[1] == "on")
    print(f"decoded {N_TOKENS} tokens with extra buffer types {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
