"""The model the app is serving, swappable at run time (no gradio here).

    slot = ModelSlot(engine, load_options)      # load_options: what Engine.load gets for every variant
    engine = slot.get()                         # the current engine (the API's `get_engine`)
    with slot.use() as engine: ...              # a lease: switch() will not close this engine while held
    slot.switch(new_engine)                     # the old engine and its steered variants are closed
    slot.steered("top1") / slot.steered("solo", expert=1)   # loaded on first use, cached until the next switch

No request ever touches a closed model: `switch` first makes the new engine current, then waits until every
lease on the old one is returned, and closes it with `Engine.close()`, which itself lets the streams still
running on it finish (an engine generates several at once, one lease each). Callers that only `get()` are
protected by the engine refusing closed use (EngineError) rather than crashing; callers that do more than one
call (build a prompt, then stream) should hold a lease. Each engine and steered variant is loaded with the same
options, `n_parallel` included: a steered reply takes a sequence of the variant, not of the model.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from moechat.engine.engine import Engine
from moechat.engine.types import LoadOptions
from moechat.errors import EngineError


class ModelSlot:
    """Owns the current Engine, its steered variants, and the leases on them."""

    def __init__(self, engine: Engine, load_options: LoadOptions | None = None, cache_dir: Path | None = None):
        self._engine = engine
        self._options: LoadOptions = load_options.copy() if load_options else {}
        self._cache_dir = cache_dir
        self._lock = threading.Condition()
        self._leases: dict[int, int] = {}  # id(engine) -> leases held
        self._steered: dict[tuple[str, int | None], Engine] = {}
        self._steer_lock = threading.Lock()  # one steered load at a time
        self.generation = 0  # bumped by every switch (the UI compares it to notice a new model)

    def get(self) -> Engine:
        with self._lock:
            return self._engine

    @contextmanager
    def use(self) -> Iterator[Engine]:
        """The current engine, kept open until the block ends."""
        with self._lock:
            engine = self._engine
            self._leases[id(engine)] = self._leases.get(id(engine), 0) + 1
        try:
            yield engine
        finally:
            self._release(engine)

    @contextmanager
    def use_steered(self, mode: str, expert: int | None = None) -> Iterator[Engine]:
        """A steered variant of the current model (loaded on first use), kept open until the block ends."""
        with self.use() as base:
            engine = self._variant(base, mode, expert)
            with self._lock:
                self._leases[id(engine)] = self._leases.get(id(engine), 0) + 1
            try:
                yield engine
            finally:
                self._release(engine)

    def steered(self, mode: str, expert: int | None = None) -> Engine:
        """The steered variant of the current model: "top1", or "solo" with an expert index."""
        return self._variant(self.get(), mode, expert)

    def switch(self, new: Engine) -> Engine:
        """Serve `new` from now on; close the old engine and its variants once nobody uses them. Returns `new`."""
        with self._lock:
            old, variants = self._engine, list(self._steered.values())
            self._engine, self._steered = new, {}
            self.generation += 1
        for engine in (*variants, old):
            if engine is not new:
                self._close_when_free(engine)
        return new

    def close(self) -> None:
        """Close everything (at shutdown)."""
        with self._lock:
            engines = [*self._steered.values(), self._engine]
            self._steered = {}
        for engine in engines:
            self._close_when_free(engine)

    @property
    def load_options(self) -> LoadOptions:
        return self._options.copy()

    # ---- internals -------------------------------------------------------------------------------------
    def _variant(self, base: Engine, mode: str, expert: int | None) -> Engine:
        key = (mode, expert if mode == "solo" else None)
        with self._steer_lock:
            with self._lock:
                found = self._steered.get(key) if base is self._engine else None
            if found is not None:
                return found
            engine = self._load_variant(base, mode, expert)
            with self._lock:
                if base is not self._engine:  # switched while loading: this variant belongs to no model
                    stale = True
                else:
                    self._steered[key], stale = engine, False
        if stale:
            engine.close()
            raise EngineError("the model was switched while the steered variant loaded; try again")
        return engine

    def _load_variant(self, base: Engine, mode: str, expert: int | None) -> Engine:
        from moechat.moe import steering

        if mode == "top1":
            return steering.top1_engine(base.info.path, **self._options)
        if mode == "solo" and expert is not None:
            cache = self._cache_dir or base.info.path.parent
            path = steering.solo_expert_gguf(base.info.path, expert, cache)
            return Engine.load(path, allow_dense=True, **self._options)
        raise EngineError(f"unknown steering {mode!r} (expected 'top1', or 'solo' with an expert)")

    def _release(self, engine: Engine) -> None:
        with self._lock:
            left = self._leases.get(id(engine), 1) - 1
            if left:
                self._leases[id(engine)] = left
            else:
                self._leases.pop(id(engine), None)
            self._lock.notify_all()

    def _close_when_free(self, engine: Engine) -> None:
        with self._lock:
            self._lock.wait_for(lambda: not self._leases.get(id(engine)))
        engine.close()  # streams still running on it finish first
