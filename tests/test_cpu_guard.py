"""The CPU path guard, tested where the crash cannot happen: the probe child acts out a faulting CPU through its
test hook (MOECHAT_CPU_PROBE_FAULT), and the real probe runs everywhere else.

Verdict tests use their own cache folders (tmp_path); the rest of the suite shares the process's one verdict.
"""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from moechat.engine import cpu_guard
from moechat.engine.cpu_guard import ENV, REBUILD, CpuUnsupportedError, build_key, decide
from moechat.engine.cpu_probe import FAULT_ENV
from moechat.engine.engine import Engine
from moechat.engine.types import LoadReport, Sampling
from moechat.errors import ConfigError
from moechat.gguf.tiny import TinySpec, write_tiny_gguf
from moechat.ui.html import model_markdown

ROOT = Path(__file__).resolve().parent.parent


def environ(**values: str) -> dict[str, str]:
    """This process's environment without the guard's variables, plus `values`."""
    env = {k: v for k, v in os.environ.items() if k not in (ENV, FAULT_ENV)}
    return env | values


def cached(cache: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(cache.glob("cpu-guard-*.json"))]


@pytest.fixture(scope="module")
def clean_here(tmp_path_factory: pytest.TempPathFactory) -> bool:
    """Whether this CPU's own probe runs clean with extra buffer types (faults can be simulated, not removed)."""
    return decide(environ(), tmp_path_factory.mktemp("machine"), "machine").extra_buffers


def test_a_clean_probe_keeps_extra_buffers_on_and_caches_it(tmp_path, clean_here):
    if not clean_here:
        pytest.skip("this CPU faults with extra buffer types: no clean probe to observe here")
    choice = decide(environ(), tmp_path, "k")
    assert choice.extra_buffers is True
    assert "ran clean" in choice.note
    assert [c["outcome"] for c in cached(tmp_path)] == ["on"]


def test_a_probe_killed_by_a_signal_with_extra_buffers_turns_them_off(tmp_path):
    choice = decide(environ(**{FAULT_ENV: "extra"}), tmp_path, "k")
    assert choice.extra_buffers is False
    assert "died by SIGILL" in choice.note and "ran clean without" in choice.note
    assert [c["outcome"] for c in cached(tmp_path)] == ["off"]


def test_dying_both_ways_is_one_line_with_the_portable_rebuild_command(tmp_path):
    with pytest.raises(CpuUnsupportedError) as err:
        decide(environ(**{FAULT_ENV: "all"}), tmp_path, "k")
    message = str(err.value)
    assert "\n" not in message
    assert message.endswith(REBUILD)
    assert 'CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install --force-reinstall --no-cache-dir --no-deps' in message
    # the verdict is cached too: the next process says so without probing (a probe now would run clean)
    with pytest.raises(CpuUnsupportedError):
        decide(environ(), tmp_path, "k")


@pytest.mark.parametrize(("fault", "timeout", "why"), [("exit", 120, "exited with status 3"), ("hang", 4, "timed out")])
def test_a_probe_failing_without_a_signal_keeps_the_default_says_why_and_is_not_cached(tmp_path, fault, timeout, why):
    choice = decide(environ(**{FAULT_ENV: fault}), tmp_path, "k", timeout=timeout)
    assert choice.extra_buffers is True
    assert why in choice.note and "default" in choice.note
    assert cached(tmp_path) == []


def test_killed_with_extra_buffers_and_failing_without_keeps_them_off_uncached(tmp_path):
    choice = decide(environ(**{FAULT_ENV: "mixed"}), tmp_path, "k")
    assert choice.extra_buffers is False
    assert "died by SIGILL with them and exited with status 3" in choice.note
    assert cached(tmp_path) == []


def test_the_verdict_is_cached_per_key_and_a_new_key_probes_again(tmp_path, clean_here):
    assert decide(environ(**{FAULT_ENV: "extra"}), tmp_path, "build-a").extra_buffers is False
    # a probe now would raise (it dies both ways): getting the cached 'off' proves no child ran
    assert decide(environ(**{FAULT_ENV: "all"}), tmp_path, "build-a").extra_buffers is False
    # another build or CPU: probed afresh (no simulated fault now), cached beside the first
    assert decide(environ(), tmp_path, "build-b").extra_buffers is clean_here
    assert len(cached(tmp_path)) == 2


def test_a_cache_entry_of_another_key_or_garbled_is_not_trusted(tmp_path, clean_here):
    with pytest.raises(CpuUnsupportedError):
        decide(environ(**{FAULT_ENV: "all"}), tmp_path, "k")  # cached: unsupported
    (entry,) = tmp_path.glob("cpu-guard-*.json")
    entry.write_text(json.dumps({**json.loads(entry.read_text()), "key": "another"}))
    assert decide(environ(), tmp_path, "k").extra_buffers is clean_here  # trusting the entry would have raised
    entry.write_text("{not json")
    assert decide(environ(**{FAULT_ENV: "extra"}), tmp_path, "k").extra_buffers is False


def test_the_key_follows_the_build_and_the_cpu(tmp_path):
    libs = tmp_path / "lib"
    libs.mkdir()
    (libs / "libggml-cpu.so").write_bytes(b"x" * 10)
    amx = "processor : 0\nflags\t\t: fpu sse avx2 amx_tile amx_int8\n"
    key = build_key(libs, amx, "x86_64")
    assert build_key(libs, amx, "x86_64") == key
    assert build_key(libs, "processor : 0\nflags\t\t: fpu sse avx2\n", "x86_64") != key  # another CPU
    assert build_key(libs, amx, "aarch64") != key
    os.utime(libs / "libggml-cpu.so", ns=(1, 1))  # a rebuilt library
    assert build_key(libs, amx, "x86_64") != key


def test_the_override_wins_over_the_cache_and_skips_the_probe(tmp_path):
    decide(environ(**{FAULT_ENV: "extra"}), tmp_path, "k")  # cached: off
    assert decide(environ(**{ENV: "on"}), tmp_path, "k").extra_buffers is True
    assert decide(environ(**{ENV: "OFF"}), tmp_path / "empty", "k").extra_buffers is False
    assert decide(environ(**{ENV: "on", FAULT_ENV: "all"}), tmp_path / "empty", "k").extra_buffers is True
    assert not (tmp_path / "empty").exists()
    assert decide(environ(**{ENV: "auto"}), tmp_path, "k").extra_buffers is False  # auto reads the cache


@pytest.mark.parametrize("value", ["maybe", "1", "true"])
def test_an_invalid_override_is_a_clear_error(tmp_path, value):
    with pytest.raises(ConfigError, match=rf"{ENV} must be auto, on or off; got '{value}'"):
        decide(environ(**{ENV: value}), tmp_path, "k")


def test_once_per_process_and_said_once(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(cpu_guard, "_chosen", {})  # this process's memory, restored afterwards
    monkeypatch.setenv("MOECHAT_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setenv(FAULT_ENV, "extra")
    with caplog.at_level(logging.INFO, logger="moechat.engine.cpu_guard"):
        first = cpu_guard.extra_buffers()
        for entry in (tmp_path / "moechat").glob("cpu-guard-*.json"):
            entry.unlink()
        monkeypatch.setenv(FAULT_ENV, "all")  # a second probe would raise
        second = cpu_guard.extra_buffers()
    assert first == second and first.extra_buffers is False
    assert not list((tmp_path / "moechat").glob("cpu-guard-*.json"))  # not probed again, nor rewritten
    said = [r for r in caplog.records if r.name == "moechat.engine.cpu_guard"]
    assert [r.levelno for r in said] == [logging.WARNING]
    assert "extra CPU buffer types off" in said[0].getMessage()


def test_engine_load_applies_the_guard(tiny_moe_path, tmp_path, monkeypatch):
    monkeypatch.setattr(cpu_guard, "_chosen", {})
    monkeypatch.setenv("MOECHAT_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv(FAULT_ENV, "all")
    with pytest.raises(CpuUnsupportedError, match="reinstall a portable build"):
        Engine.load(tiny_moe_path, n_ctx=256)
    monkeypatch.setenv(ENV, "off")
    with Engine.load(tiny_moe_path, n_ctx=256) as engine:
        assert engine.report.cpu_extra_buffers is False
        assert f"set by {ENV}=off" in engine.report.cpu_note


def test_trace_on_a_faulting_cpu_succeeds_with_extra_buffers_off(tmp_path):
    """The whole CLI path in a fresh process: the guard runs before the quantized model is evaluated."""
    model = write_tiny_gguf(tmp_path / "q.gguf", TinySpec(n_embd=256, n_ff=512, seed=7, quants=("Q4_0", "Q8_0")))
    env = environ(**{FAULT_ENV: "extra", "MOECHAT_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)})
    cmd = [sys.executable, "-m", "moechat", "trace", str(model), "--prompt", "hi there", "--max-tokens", "4"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "extra CPU buffer types off: the CPU probe died by SIGILL" in done.stderr
    assert len(json.loads(done.stdout)["tokens"]) >= 3
    assert [c["outcome"] for c in cached(tmp_path / "cache" / "moechat")] == ["off"]


def test_invalid_override_from_the_cli_is_one_line(tiny_moe_path, tmp_path):
    env = environ(**{ENV: "maybe", "PYTHONPATH": str(ROOT)})
    cmd = [sys.executable, "-m", "moechat", "trace", str(tiny_moe_path), "--prompt", "hi"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert f"moechat trace: {ENV} must be auto, on or off; got 'maybe'" in done.stderr.splitlines()


def _greedy(path: Path) -> tuple[list[int], np.ndarray]:
    with Engine.load(path, n_ctx=256, exact=True) as engine:
        toks = list(engine.stream(engine.tokenize("Once upon a time"), Sampling(temperature=0, max_tokens=12)))
        read = [t for t in toks if t.routing is not None]
        return [t.id for t in toks], np.stack([t.routing.probs for t in read])


def test_forced_off_gives_identical_tokens_and_routing_on_f32(tiny_moe_path, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    default_ids, default_probs = _greedy(tiny_moe_path)
    monkeypatch.setenv(ENV, "off")
    off_ids, off_probs = _greedy(tiny_moe_path)
    assert off_ids == default_ids
    assert np.array_equal(off_probs, default_probs)
    assert len(default_ids) > 12 and default_probs.shape[1:] == (2, 2)


def test_the_model_tab_says_what_was_chosen_and_why():
    report = LoadReport(
        False, 0, "fast", 2, 4, "2 physical cores of 4 logical CPUs", False, "extra CPU buffer types off"
    )
    text = model_markdown(object(), report)
    assert "| CPU threads | 2 (2 physical cores of 4 logical CPUs); prompt evaluation 4 |" in text
    assert "| CPU kernels | extra CPU buffer types off |" in text
