"""ModelSlot: switching models under load never lets a request touch a closed model; steered variants are
loaded lazily, cached, and closed on switch. Real tiny engines and real threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from moechat.engine.engine import Engine
from moechat.engine.types import Sampling
from moechat.errors import EngineError
from moechat.models.slot import ModelSlot

OPTIONS = {"n_ctx": 256, "n_threads": 1}


def _load(path: Path) -> Engine:
    return Engine.load(path, **OPTIONS)


def _reply(engine: Engine, n: int = 8, tokens: list[int] | None = None) -> list[int]:
    tokens = tokens or engine.tokenize("hello there")
    return [t.id for t in engine.stream(tokens, Sampling(temperature=0, max_tokens=n)) if not t.prompt]


def _assert_closed(engine: Engine) -> None:
    # NB: only stream() checks; tokenize() on a closed engine crashes (engine.py): hence leases
    with pytest.raises(EngineError, match="closed"):
        _reply(engine, tokens=[1, 2, 3])


def test_get_and_switch_closes_the_old_engine(tiny_models: dict[str, Path]) -> None:
    first = _load(tiny_models["moe2"])
    slot = ModelSlot(first, OPTIONS)
    assert slot.get() is first
    second = slot.switch(_load(tiny_models["moe4"]))
    assert slot.get() is second and slot.generation == 1
    assert second.info.n_experts == 4 and len(_reply(second)) == 8
    _assert_closed(first)
    slot.close()


def _wait_until(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_switch_waits_for_a_lease_and_a_running_stream(tiny_models: dict[str, Path]) -> None:
    old = _load(tiny_models["moe2"])
    slot = ModelSlot(old, OPTIONS)
    leased, switched = threading.Event(), threading.Event()
    results: list[list[int]] = []
    errors: list[Exception] = []
    returned_early: list[bool] = []

    def request() -> None:
        try:
            with slot.use() as engine:
                leased.set()
                _wait_until(lambda: slot.generation == 1)  # the switch is asked for while this request holds its lease
                results.append(_reply(engine, 16))
                returned_early.append(switched.is_set())
        except Exception as exc:
            errors.append(exc)

    def switch() -> None:
        slot.switch(_load(tiny_models["moe4"]))
        switched.set()

    worker = threading.Thread(target=request)
    worker.start()
    assert leased.wait(10)
    switcher = threading.Thread(target=switch)
    switcher.start()
    worker.join(10)
    switcher.join(10)
    assert errors == [] and len(results[0]) == 16
    assert returned_early == [False] and switched.is_set()  # the old engine was closed only after the lease came back
    _assert_closed(old)
    assert slot.get().info.n_experts == 4
    slot.close()


def test_many_requests_during_switches_never_fail(tiny_models: dict[str, Path]) -> None:
    slot = ModelSlot(_load(tiny_models["moe2"]), OPTIONS)
    errors: list[BaseException] = []
    done = threading.Event()
    replies, replied = [0], threading.Condition()  # replies finished so far (or failed)

    def client() -> None:
        while not done.is_set():
            try:
                with slot.use() as engine:
                    _reply(engine, 4)
            except Exception as exc:
                errors.append(exc)
            with replied:
                replies[0] += 1
                replied.notify_all()

    workers = [threading.Thread(target=client) for _ in range(2)]
    for w in workers:
        w.start()
    for name in ("moe4", "moe2", "moe4"):
        with replied:  # two more replies since the last switch, then switch while the clients keep asking
            assert replied.wait_for(lambda wanted=replies[0] + 2: replies[0] >= wanted, timeout=30)
        slot.switch(_load(tiny_models[name]))
    done.set()
    for w in workers:
        w.join(10)
    assert errors == []
    slot.close()


def test_steered_variants_are_cached_and_closed_on_switch(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    slot = ModelSlot(_load(tiny_models["moe2"]), OPTIONS, cache_dir=tmp_path)
    top1 = slot.steered("top1")
    assert top1 is slot.steered("top1") and top1.info.n_experts_used == 1
    solo = slot.steered("solo", expert=1)
    assert solo is slot.steered("solo", expert=1) and not solo.info.is_moe
    assert len(_reply(solo)) == 8
    with slot.use_steered("top1") as engine:
        assert engine is top1 and len(_reply(engine)) == 8
    slot.switch(_load(tiny_models["moe4"]))
    for closed in (top1, solo):
        _assert_closed(closed)
    assert slot.steered("top1") is not top1
    with pytest.raises(EngineError, match="unknown steering"):
        slot.steered("sideways")
    slot.close()
