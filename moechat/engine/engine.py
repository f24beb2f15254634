"""llama.cpp through llama-cpp-python's lower layers: load a GGUF MoE, tokenize, and stream Tokens that
carry the router's decision at every layer. With capture.py and scheduler.py, the only code touching llama_cpp.

One context serves `n_parallel` streams at once: scheduler.py's thread decodes them together (continuous
batching), each in its own sequence of the KV cache, which is reused for the longest common token prefix.
Further streams wait for a free sequence; abandoning a stream's generator frees its sequence. The last prompt
token is always evaluated in a step after the rest of the prompt, cached prefix or not: llama.cpp's numerics
depend on the batch size, so, for a stream running alone, the first generated token's logits come from the
same computation either way, and the same request with the same seed gives the same text whatever the cache
held before (see README, "Reproducible"). Streams batched together share their steps, so their numerics
depend on what else runs (float32 models: to about 1e-6).
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import threading
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import llama_cpp
import llama_cpp._internals as internals
import llama_cpp._logger
import numpy as np

from moechat.engine import banned, cpu_guard
from moechat.engine.batch_layout import BatchLayout
from moechat.engine.capture import Captured, FastCapture, PythonCapture, make_capture
from moechat.engine.job import Job, router_routing, tokens
from moechat.engine.memory_fit import Fit, available_memory, fit_parallel, kv_bytes_per_token
from moechat.engine.sampler import Picker
from moechat.engine.scheduler import ROUTER_KIND, Scheduler, Tap
from moechat.engine.threads import this_machine
from moechat.engine.types import LoadReport, Occupancy, Sampling, TemplateTokens, Token, Waiting
from moechat.errors import EngineError
from moechat.gguf.info import ModelInfo, open_reader, read_info, require_stacked, token_embedding

MAX_PARALLEL = 64  # sequences in one context (llama.cpp allows up to 256)
llama_cpp._logger.logger.setLevel(logging.ERROR)  # llama.cpp's load chatter stays out of the terminal
log = logging.getLogger(__name__)


class Engine:
    """A loaded model and its one llama.cpp context, shared by up to `n_parallel` streams at once."""

    def __init__(
        self,
        info: ModelInfo,
        model: internals.LlamaModel,
        ctx: internals.LlamaContext,
        capture: FastCapture | PythonCapture | None,
        report: LoadReport,
        full_prompt_routing: bool,
        n_ctx: int,
    ) -> None:
        self.info, self._model, self._capture, self.report = info, model, capture, report
        self._ctx: internals.LlamaContext | None = ctx  # None once closed
        self._overrides: ctypes.Array | None = None  # llama.cpp keeps a pointer to the load's kv overrides
        self.full_prompt_routing = full_prompt_routing
        self.n_ctx = n_ctx  # per sequence
        self.n_parallel = report.n_parallel
        self.n_batch = ctx.params.n_batch
        self._batch = internals.LlamaBatch(n_tokens=self.n_batch, embd=0, n_seq_max=1, verbose=False)  # probes
        self._pieces: dict[int, bytes] = {}
        self._eog: list[int] | None = None  # end-of-generation token ids, listed on first use
        self._scheduler = Scheduler(
            ctx,
            n_slots=self.n_parallel,
            n_ctx=n_ctx,
            n_batch=self.n_batch,
            n_layers=info.n_layers,
            n_experts=info.n_experts,
            capture=capture,
            full_prompt_routing=full_prompt_routing,
            n_vocab=model.n_vocab(),
            piece=self.piece,
            is_end=lambda tok: bool(llama_cpp.llama_vocab_is_eog(model.vocab, tok)),
            threads=(report.n_threads, report.n_threads_batch),
        )
        routed = capture is not None and info.is_moe
        self._routing = router_routing(info.n_experts_used) if routed else None
        if capture is not None:
            capture.set_kinds([ROUTER_KIND])

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_gpu_layers: int | None = None,
        capture: str = "auto",
        full_prompt_routing: bool = True,
        allow_dense: bool = False,
        exact: bool = False,
        experts_used: int | None = None,
        n_parallel: int = 1,
    ) -> Engine:
        """Load a GGUF. n_gpu_layers None = all layers when the build can offload, else 0.

        n_parallel: streams generated together (continuous batching), each with a context of n_ctx tokens.

        capture: "auto" (compiled callback, falling back to Python), "fast", "python" or "off".
        exact: float32 KV cache and attention, for comparisons with other implementations.
        experts_used: override the model's top-k (e.g. 1 to reply with top-1 routing only).
        full_prompt_routing: request outputs for every prompt token so the last layer's routing exists
        for prompt tokens too (llama.cpp drops rows without outputs before the last FFN).
        """
        if not 1 <= n_parallel <= MAX_PARALLEL:
            raise EngineError(f"n_parallel must be 1..{MAX_PARALLEL}, got {n_parallel}")
        info = read_info(path, allow_dense=allow_dense)
        require_stacked(info)  # llama.cpp no longer loads pre-2024 split-expert files: say how to upgrade them
        if experts_used is not None:
            if not info.is_moe or not 0 < experts_used <= info.n_experts:
                raise EngineError(f"experts_used must be 1..{info.n_experts} for {info.path.name}, got {experts_used}")
            info = dataclasses.replace(info, n_experts_used=experts_used)
        gpu = bool(llama_cpp.llama_supports_gpu_offload())
        layers = (info.n_layers + 1 if gpu else 0) if n_gpu_layers is None else n_gpu_layers
        cpu = cpu_guard.extra_buffers()  # before any model is evaluated: probed once per machine, in a child
        budget = this_machine()
        threads = n_threads or budget.threads
        batch_threads = max(budget.batch_threads, threads)
        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = layers
        mparams.use_extra_bufts = cpu.extra_buffers
        overrides = _overrides({f"{info.architecture}.expert_used_count": experts_used} if experts_used else {})
        mparams.kv_overrides = overrides
        try:
            model = internals.LlamaModel(path_model=str(info.path), params=mparams, verbose=False)
        except ValueError as exc:
            raise EngineError(f"llama.cpp could not load {info.path.name}: {exc}") from exc
        cap = make_capture(capture)
        n_ctx = n_ctx or info.context_length
        fit = Fit(n_parallel)
        if not (gpu and layers > 0):  # an offloaded KV cache lives in GPU memory, which llama.cpp itself checks
            per_token = kv_bytes_per_token(info.n_layers, info.kv_width, exact)
            fit = fit_parallel(n_parallel, n_ctx, per_token, info.size_bytes, available_memory())
            if fit.note:
                log.warning("%s: %s", info.path.name, fit.note)
        n_parallel = fit.n_parallel
        ctx = _context(model, n_ctx, n_parallel, threads, batch_threads, cap, exact)
        why = "requested" if n_threads else budget.note
        mode = cap.mode if cap else "off"
        offloaded = layers if gpu else 0
        report = LoadReport(
            gpu, offloaded, mode, threads, batch_threads, why, cpu.extra_buffers, cpu.note, n_ctx, n_parallel, fit.note
        )
        engine = cls(info, model, ctx, cap, report, full_prompt_routing, n_ctx)
        engine._overrides = overrides  # llama.cpp keeps the pointer: keep the array alive
        return engine

    # ---- text -------------------------------------------------------------------------------------------
    def tokenize(self, text: str, add_bos: bool = True, special: bool = True) -> list[int]:
        """Token ids as the model's tokenizer makes them (special=True parses '</s>' as the token)."""
        self._check_open()  # llama-cpp-python leaves the vocab pointer dangling after close
        return self._model.tokenize(text.encode("utf-8"), add_bos, special)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text, add_bos=False))

    def piece(self, token: int) -> bytes:
        """The token's bytes as the detokenizer writes them (control tokens give b"")."""
        piece = self._pieces.get(token)
        if piece is None:
            self._check_open()
            buf = ctypes.create_string_buffer(64)
            n = llama_cpp.llama_token_to_piece(self._model.vocab, token, buf, len(buf), 0, False)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = llama_cpp.llama_token_to_piece(self._model.vocab, token, buf, len(buf), 0, False)
            piece = self._pieces[token] = buf.raw[: max(n, 0)]
        return piece

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", "replace")

    @property
    def eos(self) -> int:
        return self._model.token_eos()

    def token_text(self, token: int) -> str:
        """A token's text with control tokens written out ("<|im_end|>"), as chat templates write them."""
        self._check_open()
        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self._model.vocab, token, buf, len(buf), 0, True)
        if n < 0:  # -n: the length it needs
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._model.vocab, token, buf, len(buf), 0, True)
        return buf.raw[: max(n, 0)].decode("utf-8", "replace")

    def eog_ids(self) -> list[int]:
        """Every token that ends a generation (EOS, EOT, <|im_end|>...), as llama.cpp marks them."""
        if self._eog is None:
            self._check_open()
            vocab = self._model.vocab
            self._eog = [t for t in range(self._model.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)]
        return self._eog

    @property
    def n_vocab(self) -> int:
        return self._model.n_vocab()

    def template_tokens(self) -> TemplateTokens:
        """The texts of the special tokens a chat template writes: BOS, EOS, the other end-of-turn tokens."""
        texts = {tok: self.token_text(tok) for tok in self.eog_ids()}
        bos = self.token_text(self.info.bos_id) if self.info.bos_id is not None else "<s>"
        eos = texts.get(self.eos) or "</s>"
        return TemplateTokens(bos or "<s>", eos, tuple(t for t in texts.values() if t and t != eos))

    # ---- generation -------------------------------------------------------------------------------------
    def stream(
        self, prompt: Sequence[int], sampling: Sampling = Sampling(), cancel: threading.Event | None = None
    ) -> Generator[Token, None, None]:
        """Evaluate `prompt` (reusing a cached prefix) and generate; see Token for the records. Waits for a free
        sequence when `n_parallel` streams are running; abandoning the generator frees its sequence."""
        if sampling.banned_strings:  # generation that backtracks: streams of its own, stitched
            yield from banned.without(self.stream, list(prompt), sampling, cancel)
            return
        yield from self._only_tokens(self._stream(prompt, sampling, cancel, report_waiting=False))

    def stream_waiting(
        self, prompt: Sequence[int], sampling: Sampling = Sampling(), cancel: threading.Event | None = None
    ) -> Generator[Token | Waiting, None, None]:
        """As `stream`, with a Waiting(place) record while the request waits for a free sequence."""
        if sampling.banned_strings:
            yield from self.stream(prompt, sampling, cancel)
            return
        yield from self._stream(prompt, sampling, cancel, report_waiting=True)

    def streams(
        self, prompt: Sequence[int], samplings: Sequence[Sampling], cancel: threading.Event
    ) -> list[Generator[Token, None, None]]:
        """One stream per sampling of the same prompt (n choices), all queued now, so they run side by side as far
        as sequences are free, the later ones taking the prompt's cache from the first. Each is read as `stream`'s;
        set `cancel` to drop the ones never read. Banned strings need a stream of their own at a time: then the
        streams start one after another, as they are read."""
        if any(s.banned_strings for s in samplings):
            return [self.stream(prompt, s, cancel) for s in samplings]
        prompt = self._checked(prompt)
        jobs = [self._submit(prompt, s, cancel) for s in samplings]
        return [self._only_tokens(self._read(job, report_waiting=False)) for job in jobs]

    def _stream(
        self, prompt: Sequence[int], sampling: Sampling, cancel: threading.Event | None, report_waiting: bool
    ) -> Generator[Token | Waiting, None, None]:
        job = self._submit(self._checked(prompt), sampling, cancel)
        yield from self._read(job, report_waiting)

    def _checked(self, prompt: Sequence[int]) -> list[int]:
        prompt = list(prompt)
        if not prompt:
            raise EngineError("empty prompt: nothing to continue from")
        if len(prompt) + 1 > self.n_ctx:
            raise EngineError(f"the prompt has {len(prompt)} tokens but the context holds {self.n_ctx}")
        self._check_open()
        return prompt

    def _submit(self, prompt: list[int], sampling: Sampling, cancel: threading.Event | None) -> Job:
        picker = Picker(self._model, sampling, self.n_ctx, self.eog_ids(), self._text_ids)
        picker.feed(prompt)
        return self._scheduler.submit(prompt, sampling, cancel, picker)

    def _read(self, job: Job, report_waiting: bool) -> Generator[Token | Waiting, None, None]:
        try:
            yield from tokens(job, self._routing, report_waiting)
        finally:
            self._scheduler.abandon(job)

    @staticmethod
    def _only_tokens(items: Generator[Token | Waiting, None, None]) -> Generator[Token, None, None]:
        try:
            for item in items:
                if isinstance(item, Token):
                    yield item
        finally:
            items.close()  # abandoning this stream frees its sequence at once, not when it is collected

    def _text_ids(self, text: str) -> list[int]:
        return self.tokenize(text, add_bos=False, special=False)

    def occupancy(self) -> Occupancy:
        """Sequences busy and requests waiting right now."""
        return self._scheduler.occupancy()

    def cached_tokens(self) -> list[int]:
        """How many tokens each sequence has in the KV cache right now (a later prompt may reuse them)."""
        return self._scheduler.cached_tokens()

    def _check_open(self) -> None:
        self._open_ctx()

    def _open_ctx(self) -> internals.LlamaContext:
        """The context; EngineError once closed (llama-cpp-python leaves its pointers dangling)."""
        if self._ctx is None:
            raise EngineError("this model was closed; load it again")
        return self._ctx

    # ---- observation beyond routing ---------------------------------------------------------------------
    def probe(self, tokens: Sequence[int], kinds: Sequence[str]) -> dict[str, dict[int, np.ndarray]]:
        """Evaluate `tokens` from an empty cache with outputs for every token, and return the graph
        tensors named `kind` or `kind-<layer>` as {kind: {layer: [rows, values]}} (rows = tokens)."""
        if self._capture is None:
            raise EngineError("capture is off for this model; load it with capture='auto'")
        with self._scheduler.exclusive():
            self._check_open()
            self._scheduler.forget(0)
            self._capture.set_kinds(list(kinds))
            try:
                self._batch_probe(list(tokens))
                captured = self._capture.take()
            finally:
                self._capture.set_kinds([ROUTER_KIND])
                self._open_ctx().kv_cache_seq_rm(0, 0, -1)
        out: dict[str, dict[int, list[np.ndarray]]] = {}
        for c in captured:
            out.setdefault(c.kind, {}).setdefault(c.layer, []).append(c.values)
        return {k: {layer: np.concatenate(v) for layer, v in d.items()} for k, d in out.items()}

    def _batch_probe(self, tokens: list[int]) -> None:
        for start in range(0, len(tokens), self.n_batch):
            chunk = tokens[start : start + self.n_batch]
            self._batch.set_batch(chunk, n_past=start, logits_all=True)
            if llama_cpp.llama_decode(self._open_ctx().ctx, self._batch.batch) != 0:
                raise EngineError("llama_decode failed while probing")

    def hidden_states(self, tokens: Sequence[int]) -> np.ndarray:
        """The residual stream entering each layer at the last token: float32 [n_layers, n_embd]."""
        got = self.probe(tokens, ["l_out"])
        embedding = token_embedding(open_reader(self.info.path), tokens[-1])  # layer 0's input
        rows = [embedding] + [got["l_out"][i][-1] for i in range(self.info.n_layers - 1)]
        return np.stack(rows).astype(np.float32)

    @contextmanager
    def watch(
        self, kinds: Sequence[str] = (), on_call: Tap | None = None
    ) -> Iterator[list[tuple[BatchLayout, list[Captured]]]]:
        """Capture the graph tensors `kinds` (e.g. "ffn_moe_topk", "embd") beside the routing in every decode
        call of the streams run inside the block: the list fills with (batch layout, captured tensors) per call.
        `on_call(layout, captured)` runs in the decoding thread after each call (decoding waits for it)."""
        if self._capture is None:
            raise EngineError("capture is off for this model; load it with capture='auto'")
        seen: list[tuple[BatchLayout, list[Captured]]] = []

        def tap(layout: BatchLayout, captured: list[Captured]) -> None:
            seen.append((layout, captured))
            if on_call is not None:
                on_call(layout, captured)

        with self._scheduler.exclusive():
            self._capture.set_kinds([ROUTER_KIND, *kinds])
            self._scheduler.tap = tap
        try:
            yield seen
        finally:
            with self._scheduler.exclusive():
                self._scheduler.tap = None
                if self._ctx is not None:  # closed inside the block: the capture is gone
                    self._capture.set_kinds([ROUTER_KIND])

    def clear(self) -> None:
        """Forget the cached prompts: the next streams evaluate every token."""
        with self._scheduler.exclusive():
            self._check_open()
            self._scheduler.forget()

    def close(self) -> None:
        """Free the context and model once running streams finish or are abandoned; waiting ones fail at once."""
        self._scheduler.close(self._free)

    def _free(self) -> None:
        if self._ctx is not None:
            self._batch.close()
            self._ctx.close()
            self._model.close()
            if self._capture is not None:
                self._capture.close()
            self._ctx = None

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _overrides(values: dict[str, int]) -> ctypes.Array | None:
    """A sentinel-terminated llama_model_kv_override array of integer overrides, or None."""
    if not values:
        return None
    array = (llama_cpp.llama_model_kv_override * (len(values) + 1))()
    for item, (key, value) in zip(array, values.items(), strict=False):
        item.key = key.encode()
        item.tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_INT
        item.value.val_i64 = value
    return array


def _context(
    model: internals.LlamaModel,
    n_ctx: int,
    n_seq: int,
    threads: int,
    batch_threads: int,
    cap: FastCapture | PythonCapture | None,
    exact: bool,
) -> internals.LlamaContext:
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = n_ctx * n_seq
    params.n_seq_max = n_seq
    params.kv_unified = True  # one micro-batch per decode in batch order: see batch_layout.py
    params.n_batch = params.n_ubatch = min(512, n_ctx)
    params.n_threads, params.n_threads_batch = threads, batch_threads
    if exact:  # float32 KV cache and no flash attention (whose CPU path rounds Q to f16)
        params.type_k = params.type_v = 0  # GGML_TYPE_F32
        params.flash_attn_type = 0  # LLAMA_FLASH_ATTN_TYPE_DISABLED
    if cap is not None:
        params.cb_eval = cap.callback
        params.cb_eval_user_data = cap.user_data
    try:
        return internals.LlamaContext(model=model, params=params, verbose=False)
    except ValueError as exc:
        raise EngineError(f"llama.cpp could not create a context of {n_seq} x {n_ctx} tokens: {exc}") from exc
