"""Continuous batching: one thread drives llama_decode for every active sequence of one llama.cpp context.

    scheduler = Scheduler(ctx, model, capture, n_slots=4, n_ctx=4096, n_batch=512, ...)
    job = scheduler.submit(prompt, sampling, cancel)   # then read job.records (see job.py)

The context has `n_slots` sequences (llama.cpp seq ids 0..n-1) in one unified KV cache; a slot keeps the
tokens and the router logits of every position cached for its sequence, also after its request ends, so a
later request that starts the same way (the next turn of a chat) reuses them: it gets the free slot with the
longest common prefix when it covers at least half the prompt, else the least recently used one. A longer
start cached by any other sequence is shared before the prompt is read (llama.cpp's seq_cp: the cells then
belong to both), and a stream whose prompt shares a long start with an earlier one still reading it waits for
it (n choices of one prompt read it once). Requests beyond the slots wait in order of arrival.

Each step decodes, in one batch, the next token of every generating sequence and prompt tokens of the
sequences that are joining (at most PROMPT_CHUNK of them while others generate, so a long prompt holds the
others up for one chunk at a time; a prompt's last token always comes in a step after the rest, as a lone
stream's does). A step of next tokens only runs on the generation threads, one with prompt tokens on the
prompt threads (llama.cpp itself would take the prompt threads for any batch over one token). Each request
picks with its own Picker (sampler chain, seed, biases, grammar) from its sequence's row of the step's
logits. The rows of the captured `ffn_moe_logits-L` are matched to (sequence, position) by
batch_layout.rows_by_layer. A finished, cancelled or abandoned request frees its slot at the step's end.

The thread runs while there is work and exits when idle; `exclusive()` gives the caller the context between
requests (probing, clearing, closing).
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import llama_cpp
import llama_cpp._internals as internals
import numpy as np

from moechat.engine.batch_layout import BatchLayout, rows_by_layer
from moechat.engine.capture import Captured, FastCapture, PythonCapture
from moechat.engine.job import Ended, Job, Produced, PromptRead
from moechat.engine.sampler import Picker, logprobs
from moechat.engine.text_release import TextReleaser
from moechat.engine.types import Logprobs, Occupancy, Sampling
from moechat.errors import EngineError

log = logging.getLogger(__name__)
ROUTER_KIND = "ffn_moe_logits"
PROMPT_CHUNK = 128  # prompt tokens per step while other sequences are generating
SIMILAR = 0.5  # a free slot's cache is reused when it covers this share of the prompt (else the LRU slot)
MIN_SHARE = 32  # prompt tokens worth taking from another sequence's cache (or waiting for one to read them)
Tap = Callable[[BatchLayout, list[Captured]], None]


@dataclass
class _Slot:
    seq: int
    kv: list[int] = field(default_factory=list)  # token ids cached for this sequence, by position
    job: Job | None = None
    used: int = 0  # when it last took a request (for least-recently-used choice)


@dataclass
class _Run:
    """A running job's state, kept by the scheduler's thread only."""

    job: Job
    slot: _Slot
    order: int  # admission order: prompts are read first come, first served
    reused: int
    stops: TextReleaser
    generated: int = 0
    pending: int | None = None  # a sampled token still to be decoded (for its routing and the next logits)
    pending_finish: str | None = None  # ... and the finish it carries when it is the last one
    pending_logprobs: Logprobs | None = None


@dataclass
class _Part:
    run: _Run
    start: int  # the position of its first token
    index: range  # batch indices


class Scheduler:
    """N sequence slots of one context, one driving thread, a queue of waiting requests."""

    def __init__(
        self,
        ctx: internals.LlamaContext,
        *,
        n_slots: int,
        n_ctx: int,
        n_batch: int,
        n_layers: int,
        n_experts: int,
        capture: FastCapture | PythonCapture | None,
        full_prompt_routing: bool,
        n_vocab: int,
        piece: Callable[[int], bytes],
        is_end: Callable[[int], bool],
        threads: tuple[int, int],
    ) -> None:
        self._ctx, self._capture = ctx, capture
        self._threads = threads  # (generation, prompt): llama.cpp would use the second for any batch over one token
        self._threads_set = threads
        self.n_slots, self.n_ctx, self.n_batch = n_slots, n_ctx, n_batch
        self._last_layer = n_layers - 1
        self._all_outputs = full_prompt_routing and capture is not None
        self._n_vocab, self._piece, self._is_end = n_vocab, piece, is_end
        self._slots = [_Slot(seq) for seq in range(n_slots)]
        self._runs: dict[int, _Run] = {}  # by seq
        self._logits = np.full((n_slots, n_ctx, n_layers, max(n_experts, 1)), np.nan, np.float32)
        self._batch = internals.LlamaBatch(n_tokens=n_batch, embd=0, n_seq_max=1, verbose=False)
        self._cond = threading.Condition()
        self._waiting: deque[Job] = deque()
        self._thread: threading.Thread | None = None
        self._exclusive = False
        self._exclusive_lock = threading.Lock()  # one exclusive caller at a time
        self._closed = False
        self._order = itertools.count(1)  # slot.used 0: never used
        self.tap: Tap | None = None  # sees every decode call's layout and captures (Engine.watch)

    # ---- callers ----------------------------------------------------------------------------------------
    def submit(self, prompt: list[int], sampling: Sampling, cancel: threading.Event | None, picker: Picker) -> Job:
        """Queue a request; the job's picker is the scheduler's from now on (closed when the job leaves)."""
        job = Job(prompt, sampling, cancel, picker)
        job.place = lambda: self._place(job)
        with self._cond:
            if self._closed:
                picker.close()
                raise EngineError("this model was closed; load it again")
            self._waiting.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="moechat-decode", daemon=True)
                self._thread.start()
            self._cond.notify_all()
        return job

    def abandon(self, job: Job) -> None:
        """The caller left: free the job's slot (or its place in the queue) at the next step."""
        job.abandoned.set()
        with self._cond:
            if job in self._waiting:
                self._waiting.remove(job)
                job.picker.close()
            self._cond.notify_all()

    def occupancy(self) -> Occupancy:
        with self._cond:
            busy = sum(s.job is not None for s in self._slots)
            return Occupancy(self.n_slots, busy, len(self._waiting))

    def cached_tokens(self) -> list[int]:
        return [len(slot.kv) for slot in self._slots]

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """The context to the caller alone: waits until no sequence is running and admits none until the end."""
        with self._exclusive_lock:
            with self._cond:
                self._exclusive = True
                try:
                    self._cond.wait_for(lambda: all(s.job is None for s in self._slots))
                except BaseException:
                    self._exclusive = False
                    raise
                if self._threads_set != self._threads and not self._closed:  # the caller's batches: prompt threads
                    llama_cpp.llama_set_n_threads(self._ctx.ctx, *self._threads)
                    self._threads_set = self._threads
            try:
                yield
            finally:
                with self._cond:
                    self._exclusive = False
                    self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def forget(self, seq: int | None = None) -> None:
        """Drop the cache of one sequence (or all); only inside exclusive()."""
        for slot in self._slots if seq is None else [self._slots[seq]]:
            self._truncate(slot, 0)

    def close(self, free: Callable[[], None]) -> None:
        """Refuse new requests and fail waiting ones at once; once running ones are done, `free()` the context."""
        with self._cond:
            self._closed = True
            while self._waiting:
                self._waiting.popleft().put(Ended(EngineError("this model was closed; load it again")))
            self._cond.notify_all()
        with self.exclusive():
            if self._batch.batch is not None:
                self._batch.close()
                free()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    # ---- the driving thread -----------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                runs = self._next_runs()
                if runs is None:
                    self._thread = None
                    self._cond.notify_all()
                    return
            try:
                done = self._step(runs)
            except Exception as exc:  # a bug: fail these requests, never the waiting ones or the thread
                log.exception("decode step failed")
                done = runs
                for run in runs:
                    self._truncate(run.slot, 0, force=True)
                    run.job.put(Ended(EngineError(f"generation failed: {exc}")))
            with self._cond:
                for run in done:
                    run.job.picker.close()
                    run.slot.job = None
                    del self._runs[run.slot.seq]
                self._cond.notify_all()

    def _next_runs(self) -> list[_Run] | None:
        """Under the lock: admit waiting jobs into free slots; the running ones, or None when there is no work."""
        while True:
            if not self._exclusive:
                self._admit()
            if self._runs:
                return list(self._runs.values())
            if not self._waiting or self._closed:
                return None
            self._cond.wait()  # waiting jobs, but an exclusive caller holds the context

    def _admit(self) -> None:
        while self._waiting:
            free = [s for s in self._slots if s.job is None]
            if not free:
                return
            job = self._waiting.popleft()
            if job.stopped():
                job.picker.close()
                job.put(Ended())
                continue
            slot = _pick(free, job.prompt)
            keep = min(_common_prefix(slot.kv, job.prompt), len(job.prompt) - 1)  # read at least one token
            self._truncate(slot, keep)
            order = next(self._order)
            slot.job, slot.used = job, order
            self._runs[slot.seq] = _Run(job, slot, order, keep, TextReleaser(job.sampling.stop))

    def _place(self, job: Job) -> int:
        with self._cond:
            return self._waiting.index(job) + 1 if job in self._waiting else 0

    def _step(self, runs: list[_Run]) -> list[_Run]:
        """One decode call for every running job; returns the jobs that are done."""
        done = [run for run in runs if run.job.stopped()]
        for run in done:
            run.job.put(Ended())
        live = [run for run in runs if not run.job.stopped()]
        layout, parts = self._plan(live)
        if not parts:
            return done
        try:
            self._decode(layout)
        except EngineError as exc:
            for part in parts:
                self._ctx.kv_cache_seq_rm(part.run.slot.seq, part.start, -1)  # whatever llama.cpp kept of it
                part.run.job.put(Ended(exc))
            return done + [p.run for p in parts]
        for part in parts:
            if self._advance(part.run, part.index[-1]):
                done.append(part.run)
        return done

    def _plan(self, runs: list[_Run]) -> tuple[BatchLayout, list[_Part]]:
        """This step's batch: one token of each generating sequence, then prompt chunks in arrival order."""
        layout, parts = BatchLayout(), []
        generating = [r for r in runs if r.pending is not None]
        for run in generating:
            assert run.pending is not None
            index = layout.add(run.slot.seq, len(run.slot.kv), [run.pending], [True])
            parts.append(_Part(run, len(run.slot.kv), index))
        budget = self.n_batch - len(layout)
        if generating:
            budget = min(budget, PROMPT_CHUNK)
        joining = sorted((r for r in runs if r.pending is None), key=lambda r: r.order)
        for run in joining:
            if budget <= 0:
                break
            if not self._share(run, joining):
                continue
            done, last = len(run.slot.kv), len(run.job.prompt) - 1
            chunk = run.job.prompt[done : min(done + budget, last)] if done < last else run.job.prompt[last:]
            outputs = [self._all_outputs] * len(chunk)
            if done + len(chunk) == len(run.job.prompt):
                outputs[-1] = True  # its logits give the first generated token
            parts.append(_Part(run, done, layout.add(run.slot.seq, done, chunk, outputs)))
            budget -= len(chunk)
        if parts and not any(layout.outputs):
            layout.outputs[-1] = True  # llama.cpp computes logits for one token at least
        return layout, parts

    def _share(self, run: _Run, joining: list[_Run]) -> bool:
        """Before reading a prompt chunk: take the longest start of the prompt that another sequence has cached
        (llama.cpp's cells then belong to both sequences: nothing is copied or computed again), or return False
        to wait while an earlier stream is still reading a start it shares (n choices of one prompt, visitors
        with the same character)."""
        prompt, slot = run.job.prompt, run.slot
        want, have = len(prompt) - 1, len(slot.kv)  # the last prompt token is always read by its own stream
        if have >= want:
            return True
        for other in joining:
            if other is run:
                break
            shared = min(_common_prefix(other.job.prompt, prompt), want)
            if shared - have >= MIN_SHARE and len(other.slot.kv) < shared:
                return False
        donor = max((s for s in self._slots if s is not slot), key=lambda s: _common_prefix(s.kv, prompt), default=None)
        n = min(_common_prefix(donor.kv, prompt), want) if donor is not None else 0
        if donor is None or n - have < MIN_SHARE:
            return True
        self._ctx.kv_cache_seq_rm(slot.seq, 0, -1)
        self._ctx.kv_cache_seq_cp(donor.seq, slot.seq, 0, n)
        slot.kv = donor.kv[:n]
        self._logits[slot.seq, :n] = self._logits[donor.seq, :n]
        self._logits[slot.seq, n:] = np.nan
        run.reused = max(run.reused, n)
        return True

    def _decode(self, layout: BatchLayout) -> None:
        batch = self._batch.batch
        n = len(layout)
        generation, prompt = self._threads
        wanted = (generation, prompt if n > len(set(layout.seqs)) else generation)  # next tokens only: generation's
        if wanted != self._threads_set:
            llama_cpp.llama_set_n_threads(self._ctx.ctx, *wanted)
            self._threads_set = wanted
        batch.n_tokens = n
        entries = zip(layout.tokens, layout.seqs, layout.positions, layout.outputs, strict=True)
        for i, (tok, seq, pos, out) in enumerate(entries):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = tok, pos, 1, out
            batch.seq_id[i][0] = seq
        rc = llama_cpp.llama_decode(self._ctx.ctx, batch)
        captured = self._capture.take() if self._capture is not None else []
        if rc != 0:
            raise EngineError(f"llama_decode failed with status {rc} for {n} tokens of {len(set(layout.seqs))} streams")
        for seq, tok in zip(layout.seqs, layout.tokens, strict=True):
            self._slots[seq].kv.append(tok)
        if self.tap is not None:
            self.tap(layout, captured)
        if self._capture is not None:
            records = ((c.kind, c.layer, c.values) for c in captured)
            seqs, positions = np.asarray(layout.seqs), np.asarray(layout.positions)
            for layer, (index, rows) in rows_by_layer(layout, ROUTER_KIND, records, self._last_layer).items():
                self._logits[seqs[index], positions[index], layer] = rows

    def _advance(self, run: _Run, last_index: int) -> bool:
        """After the decode: hand over what is complete and sample the next token. True when the job is done."""
        slot, job = run.slot, run.job
        if run.pending is None:  # a prompt chunk
            if len(slot.kv) < len(job.prompt):
                return False
            logits = self._logits[slot.seq, : len(job.prompt)].copy() if self._capture is not None else None
            job.put(PromptRead(run.reused, [self._piece(tok) for tok in job.prompt], logits))
            return self._sample(run, last_index)
        pos = len(slot.kv) - 1
        logits = self._logits[slot.seq, pos].copy() if self._capture is not None else None
        job.put(Produced(pos, run.pending, self._piece(run.pending), logits, run.pending_finish, run.pending_logprobs))
        if run.pending_finish is not None:
            return True
        run.pending = None
        return self._sample(run, last_index)

    def _sample(self, run: _Run, index: int) -> bool:
        logits = self._logits_at(index)
        tok = run.job.picker.pick(logits, run.generated)
        pos, s = len(run.slot.kv), run.job.sampling
        if tok is None:  # nothing is allowed any more
            run.job.put(Produced(pos, -1, b"", None, "stop"))
            return True
        probs = logprobs(logits, tok, s.n_probs) if s.n_probs > 0 else None
        piece = self._piece(tok)
        if self._is_end(tok):
            run.job.put(Produced(pos, tok, piece, None, "eos", probs))
            return True
        _, stopped = run.stops.feed(piece)
        run.generated += 1
        last = stopped or run.generated >= run.job.sampling.max_tokens or pos + 1 >= self.n_ctx
        finish = "stop" if stopped else ("length" if last else None)
        if not last or self._capture is not None:  # the last token is read back only for its routing
            run.pending, run.pending_finish, run.pending_logprobs = tok, finish, probs
            return False
        run.job.put(Produced(pos, tok, piece, None, finish, probs))
        return True

    def _logits_at(self, index: int) -> np.ndarray:
        """The logits of the step's batch entry `index` (a view of llama.cpp's buffer, valid until the next step)."""
        ptr = llama_cpp.llama_get_logits_ith(self._ctx.ctx, index)
        return np.ctypeslib.as_array(ptr, shape=(self._n_vocab,))

    def _truncate(self, slot: _Slot, n: int, force: bool = False) -> None:
        if n < len(slot.kv) or force:
            self._ctx.kv_cache_seq_rm(slot.seq, n, -1)
            del slot.kv[n:]
            self._logits[slot.seq, n:] = np.nan


def _pick(free: list[_Slot], prompt: list[int]) -> _Slot:
    """The free slot whose cache covers most of the prompt when that is at least half of it (the next turn of
    a chat), else the least recently used one (keeping the other slots' caches for their chats)."""
    best = max(free, key=lambda s: (_common_prefix(s.kv, prompt), -s.used))
    if _common_prefix(best.kv, prompt) >= SIMILAR * len(prompt):
        return best
    return min(free, key=lambda s: s.used)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
