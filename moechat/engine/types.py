"""The engine's records, free of llama.cpp: what to sample with, what a stream yields, how a model was loaded.

Importing this module loads no native library, so request parsing (the API's schema) and views can use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

from moechat.routing.metrics import Routing


@dataclass(frozen=True)
class Sampling:
    """How to pick tokens. temperature <= 0 is greedy; seed None is a fresh random seed."""

    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    seed: int | None = None
    max_tokens: int = 256
    stop: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Token:
    """One token read or produced by the model at position `pos`.

    Prompt tokens come first (prompt=True; cached=True when their KV and routing were reused from an
    earlier call), then generated ones. `text` is what this token releases to the reader: stop strings
    are never released, and bytes of a character split over tokens wait for the rest. The last record
    of a stream has `finish` set: "eos", "length", "stop" or "cancelled" (a marker with id -1).
    """

    pos: int
    id: int
    text: str
    piece: bytes
    routing: Routing | None
    prompt: bool = False
    cached: bool = False
    finish: str | None = None


class LoadOptions(TypedDict, total=False):
    """Engine.load's settings that the app applies to every model it loads (and to their steered variants)."""

    n_ctx: int
    n_threads: int | None
    n_gpu_layers: int | None
    capture: str
    full_prompt_routing: bool


@dataclass(frozen=True)
class LoadReport:
    gpu_offload_supported: bool
    n_gpu_layers: int
    capture: str  # "fast", "python" or "off"
    n_threads: int
    n_threads_batch: int = 0
    threads_note: str = ""  # why n_threads: "2 physical cores", "requested"
    cpu_extra_buffers: bool = True  # ggml's extra CPU buffer types (AMX, repacking): see engine/cpu_guard.py
    cpu_note: str = ""  # why cpu_extra_buffers
