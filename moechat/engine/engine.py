"""llama.cpp through llama-cpp-python's lower layers: load a GGUF MoE, tokenize, and stream Tokens that
carry the router's decision at every layer. The only module (with capture.py) touching llama_cpp.

One context is never driven by two threads: a stream holds the engine's lock for its whole life, and
abandoning the generator releases it. The KV cache is reused for the longest common token prefix, and the
last prompt token is always evaluated on its own, cached prefix or not: llama.cpp's numerics depend on the
batch size, so the first generated token's logits come from the same computation either way, and the same
request with the same seed gives the same text whatever the cache held before (see README, "Reproducible").
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import threading
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path

import llama_cpp
import llama_cpp._internals as internals
import llama_cpp._logger
import numpy as np

from moechat.engine import banned, cpu_guard
from moechat.engine.capture import Captured, FastCapture, PythonCapture, make_capture
from moechat.engine.sampler import Picker, logprobs
from moechat.engine.text_release import TextReleaser
from moechat.engine.threads import this_machine
from moechat.engine.types import LoadReport, Sampling, TemplateTokens, Token
from moechat.errors import EngineError
from moechat.gguf.info import ModelInfo, open_reader, read_info, require_stacked, token_embedding
from moechat.routing.metrics import Routing, from_logits

ROUTER_KIND = "ffn_moe_logits"
llama_cpp._logger.logger.setLevel(logging.ERROR)  # llama.cpp's load chatter stays out of the terminal


class Engine:
    """A loaded model and its one llama.cpp context."""

    def __init__(
        self,
        info: ModelInfo,
        model: internals.LlamaModel,
        ctx: internals.LlamaContext,
        capture: FastCapture | PythonCapture | None,
        report: LoadReport,
        full_prompt_routing: bool,
    ) -> None:
        self.info, self._model, self._capture, self.report = info, model, capture, report
        self._ctx: internals.LlamaContext | None = ctx  # None once closed
        self._overrides: ctypes.Array | None = None  # llama.cpp keeps a pointer to the load's kv overrides
        self.full_prompt_routing = full_prompt_routing
        self.n_ctx = ctx.n_ctx()
        self.n_batch = ctx.params.n_batch
        self._lock = threading.Lock()
        self._batch = internals.LlamaBatch(n_tokens=self.n_batch, embd=0, n_seq_max=1, verbose=False)
        self._pieces: dict[int, bytes] = {}
        self._eog: list[int] | None = None  # end-of-generation token ids, listed on first use
        self._kv: list[int] = []  # token ids whose keys/values are in the cache, by position
        shape = (self.n_ctx, info.n_layers, max(info.n_experts, 1))
        self._router_logits = np.full(shape, np.nan, np.float32)  # routing of every cached position
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
    ) -> Engine:
        """Load a GGUF. n_gpu_layers None = all layers when the build can offload, else 0.

        capture: "auto" (compiled callback, falling back to Python), "fast", "python" or "off".
        exact: float32 KV cache and attention, for comparisons with other implementations.
        experts_used: override the model's top-k (e.g. 1 to reply with top-1 routing only).
        full_prompt_routing: request outputs for every prompt token so the last layer's routing exists
        for prompt tokens too (llama.cpp drops rows without outputs before the last FFN).
        """
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
        ctx = _context(model, n_ctx or info.context_length, threads, batch_threads, cap, exact)
        why = "requested" if n_threads else budget.note
        mode = cap.mode if cap else "off"
        offloaded = layers if gpu else 0
        report = LoadReport(gpu, offloaded, mode, threads, batch_threads, why, cpu.extra_buffers, cpu.note, ctx.n_ctx())
        engine = cls(info, model, ctx, cap, report, full_prompt_routing)
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
        """Evaluate `prompt` (reusing the cached prefix) and generate; see Token for the records."""
        prompt = list(prompt)
        if sampling.banned_strings:  # generation that backtracks: streams of its own, stitched
            yield from banned.without(self.stream, prompt, sampling, cancel)
            return
        if not prompt:
            raise EngineError("empty prompt: nothing to continue from")
        if len(prompt) + 1 > self.n_ctx:
            raise EngineError(f"the prompt has {len(prompt)} tokens but the context holds {self.n_ctx}")
        with self._lock:
            self._check_open()
            picker = Picker(self._model, sampling, self.n_ctx, self.eog_ids(), self._text_ids)
            try:
                reused = self._evaluate_prompt(prompt)
                picker.feed(prompt)
                text = TextReleaser(())
                for pos, tok in enumerate(prompt):
                    piece = self.piece(tok)
                    released = text.feed(piece)[0] + (text.flush() if pos == len(prompt) - 1 else "")
                    yield Token(pos, tok, released, piece, self._routing_at(pos), prompt=True, cached=pos < reused)
                yield from self._generate(sampling, picker, cancel)
            finally:
                picker.close()

    def _evaluate_prompt(self, prompt: list[int]) -> int:
        """Bring the cache to `prompt`: keep the common prefix, evaluate the rest but the last token in
        batches, then the last token alone (so its logits never depend on what was cached)."""
        keep = _common_prefix(self._kv, prompt)
        keep = min(keep, len(prompt) - 1)
        self._truncate(keep)
        all_outputs = self.full_prompt_routing and self._capture is not None
        self._decode(prompt[keep:-1], all_outputs=all_outputs)
        self._decode(prompt[-1:], all_outputs=all_outputs)
        return keep

    def _text_ids(self, text: str) -> list[int]:
        return self.tokenize(text, add_bos=False, special=False)

    def _logits(self) -> np.ndarray:
        """The last evaluated token's logits (a view of llama.cpp's buffer)."""
        ptr = llama_cpp.llama_get_logits_ith(self._open_ctx().ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self._model.n_vocab(),))

    def _generate(self, s: Sampling, picker: Picker, cancel: threading.Event | None) -> Iterator[Token]:
        text = TextReleaser(s.stop)
        for i in range(s.max_tokens):
            if cancel is not None and cancel.is_set():
                yield Token(len(self._kv), -1, text.flush(), b"", None, finish="cancelled")
                return
            logits = self._logits()
            tok = picker.pick(logits, i)
            if tok is None:  # nothing is allowed any more (a finished grammar whose end is banned)
                yield Token(len(self._kv), -1, text.flush(), b"", None, finish="stop")
                return
            probs = logprobs(logits, tok, s.n_probs) if s.n_probs > 0 else None
            pos, piece = len(self._kv), self.piece(tok)
            if llama_cpp.llama_vocab_is_eog(self._model.vocab, tok):
                yield Token(pos, tok, text.flush(), piece, None, finish="eos", logprobs=probs)
                return
            released, stopped = text.feed(piece)
            last = stopped or i == s.max_tokens - 1 or pos + 1 >= self.n_ctx
            if not last or self._capture is not None:  # the last token is read back only for its routing
                self._decode([tok], all_outputs=False)
            finish = "stop" if stopped else ("length" if last else None)
            if last and not stopped:
                released += text.flush()
            routing = self._routing_at(pos) if pos < len(self._kv) else None
            yield Token(pos, tok, released, piece, routing, finish=finish, logprobs=probs)
            if last:
                return

    # ---- llama.cpp calls --------------------------------------------------------------------------------
    def _decode(self, tokens: list[int], all_outputs: bool) -> None:
        for start in range(0, len(tokens), self.n_batch):
            chunk = tokens[start : start + self.n_batch]
            pos = len(self._kv)
            self._batch.set_batch(chunk, n_past=pos, logits_all=all_outputs)
            rc = llama_cpp.llama_decode(self._open_ctx().ctx, self._batch.batch)
            if rc != 0:
                self._truncate(pos)
                raise EngineError(f"llama_decode failed with status {rc} at position {pos}")
            self._kv.extend(chunk)
            if self._capture is not None:
                self._store_routing(self._capture.take(), pos, len(chunk), all_outputs)

    def _store_routing(self, captured: list[Captured], pos: int, n: int, all_outputs: bool) -> None:
        by_layer: dict[int, list[np.ndarray]] = {}
        for c in captured:
            by_layer.setdefault(c.layer, []).append(c.values)
        last = self.info.n_layers - 1
        for layer, parts in by_layer.items():
            rows = np.concatenate(parts)
            if len(rows) == n:
                self._router_logits[pos : pos + n, layer] = rows
            elif layer == last and not all_outputs and len(rows) == 1:  # only the final row was kept
                self._router_logits[pos + n - 1, layer] = rows[0]
            else:
                raise EngineError(f"routing capture: layer {layer} gave {len(rows)} rows for {n} tokens")

    def _routing_at(self, pos: int) -> Routing | None:
        if self._capture is None or not self.info.is_moe:
            return None
        probs, experts = from_logits(self._router_logits[pos], self.info.n_experts_used)
        experts[np.isnan(probs[:, 0])] = -1  # a layer whose routing was not observed
        return Routing(probs, experts)

    def _truncate(self, n: int) -> None:
        if n < len(self._kv):
            self._open_ctx().kv_cache_seq_rm(0, n, -1)
            del self._kv[n:]
            self._router_logits[n:] = np.nan

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
        with self._lock:
            self._check_open()
            self._truncate(0)
            self._capture.set_kinds(list(kinds))
            try:
                self._batch_probe(list(tokens))
                captured = self._capture.take()
            finally:
                self._capture.set_kinds([ROUTER_KIND])
                self._truncate(0)
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
            self._kv.extend(chunk)

    def hidden_states(self, tokens: Sequence[int]) -> np.ndarray:
        """The residual stream entering each layer at the last token: float32 [n_layers, n_embd]."""
        got = self.probe(tokens, ["l_out"])
        embedding = token_embedding(open_reader(self.info.path), tokens[-1])  # layer 0's input
        rows = [embedding] + [got["l_out"][i][-1] for i in range(self.info.n_layers - 1)]
        return np.stack(rows).astype(np.float32)

    def clear(self) -> None:
        """Forget the cached prompt: the next stream evaluates every token."""
        with self._lock:
            self._check_open()
            self._truncate(0)

    def close(self) -> None:
        """Free the context and model; waits for a running stream to finish or be abandoned."""
        with self._lock:
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


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


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
    threads: int,
    batch_threads: int,
    cap: FastCapture | PythonCapture | None,
    exact: bool,
) -> internals.LlamaContext:
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = n_ctx
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
        raise EngineError(f"llama.cpp could not create a context of {n_ctx} tokens: {exc}") from exc
