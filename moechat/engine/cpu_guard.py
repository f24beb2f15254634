"""The CPU path guard: are ggml's extra CPU buffer types (AMX kernels, weight repacking) safe on this machine?

Some CPUs advertise AMX but fault in it: the first quantized matmul over a batch of two or more tokens dies
with SIGILL inside ggml, taking the whole process with it. So before the first model of a process is loaded,
a child process (moechat.engine.cpu_probe) loads a tiny quantized model and decodes one batch, first with the extra
buffer types on; if it dies by a signal, again with them off. The verdict:

  on           the probe ran clean: keep llama.cpp's default
  off          died with them on, lived without: load every model with use_extra_bufts=False
  unsupported  died both ways: this native build carries instructions the CPU lacks -> CpuUnsupportedError,
               whose one line gives the portable rebuild command

A probe that fails otherwise (an exit status, a timeout) keeps the default and says why (after a death with
them on, they stay off); such verdicts are not cached. The others are cached as JSON under the cache dir,
keyed by the llama-cpp-python build (version, shared libraries' sizes and times) and the CPU (its flags, the
machine type), and kept in memory once per process. MOECHAT_CPU_EXTRA_BUFFERS=on|off skips the probe; auto
(the default) runs it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import llama_cpp

import moechat
from moechat.engine.capture import LIB_DIR, cache_dir
from moechat.errors import ConfigError, EngineError

ENV = "MOECHAT_CPU_EXTRA_BUFFERS"
MODES = ("auto", "on", "off")
PROBE_VERSION = 1  # bump when the probe changes what it tests: cached verdicts are then re-probed
PROBE_TIMEOUT_S = 180.0
REBUILD = (
    'CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install --force-reinstall --no-cache-dir --no-deps '
    f"llama-cpp-python=={llama_cpp.__version__}"
)
log = logging.getLogger(__name__)


class CpuUnsupportedError(EngineError):
    """This llama.cpp build cannot run on this CPU at all."""


@dataclass(frozen=True)
class CpuChoice:
    """What every model load uses: extra buffer types on or off, and why (one line)."""

    extra_buffers: bool
    note: str


@dataclass(frozen=True)
class Verdict:
    """A probe's outcome: 'on', 'off' or 'unsupported'; only conclusive verdicts are cached."""

    outcome: str
    note: str
    conclusive: bool = True

    def choice(self) -> CpuChoice:
        if self.outcome == "unsupported":
            raise CpuUnsupportedError(self.note)
        return CpuChoice(self.outcome != "off", self.note)


def mode(env: Mapping[str, str]) -> str:
    """MOECHAT_CPU_EXTRA_BUFFERS, validated: auto (unset or empty), on or off."""
    value = env.get(ENV, "").strip().lower() or "auto"
    if value not in MODES:
        raise ConfigError(f"{ENV} must be auto, on or off; got {env[ENV]!r}")
    return value


def cpu_flags(cpuinfo: str) -> str:
    """The CPU's feature flags from /proc/cpuinfo text (x86 'flags', ARM 'Features'), sorted; '' if none."""
    for line in cpuinfo.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() in ("flags", "Features"):
            return " ".join(sorted(value.split()))
    return ""


def build_key(lib_dir: Path = LIB_DIR, cpuinfo: str | None = None, machine: str | None = None) -> str:
    """What a verdict depends on: the llama-cpp-python build and the CPU, hashed."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo = platform.processor()
    parts = [f"probe {PROBE_VERSION}", f"llama-cpp-python {llama_cpp.__version__}"]
    for lib in sorted(lib_dir.iterdir()) if lib_dir.is_dir() else []:
        if lib.is_file():
            stat = lib.stat()
            parts.append(f"{lib.name} {stat.st_size} {stat.st_mtime_ns}")
    parts += [f"cpu {cpu_flags(cpuinfo) or cpuinfo.strip()}", f"machine {machine or platform.machine()}"]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


@dataclass(frozen=True)
class ProbeRun:
    """One probe child: its return code (negative: killed by that signal; None: timed out) and why, if it said."""

    returncode: int | None
    said: str = ""

    @property
    def clean(self) -> bool:
        return self.returncode == 0

    @property
    def killed(self) -> bool:
        return self.returncode is not None and self.returncode < 0

    def __str__(self) -> str:
        rc = self.returncode
        if rc is None:
            return "timed out"
        if rc < 0:
            try:
                return f"died by {signal.Signals(-rc).name}"
            except ValueError:
                return f"died by signal {-rc}"
        return f"exited with status {rc}" + (f" ({self.said})" if self.said else "")


def run_probe(extra_buffers: bool, env: Mapping[str, str], timeout: float = PROBE_TIMEOUT_S) -> ProbeRun:
    """Run the probe child once, in a temporary folder, with extra buffer types on or off."""
    child_env = dict(env)
    package_root = str(Path(moechat.__file__).resolve().parent.parent)  # importable even when not installed
    child_env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    with tempfile.TemporaryDirectory(prefix="moechat-cpu-probe-") as folder:
        cmd = [sys.executable, "-m", "moechat.engine.cpu_probe", folder, "on" if extra_buffers else "off"]
        try:
            done = subprocess.run(cmd, cwd=folder, env=child_env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return ProbeRun(None)
    lines = done.stderr.strip().splitlines()
    return ProbeRun(done.returncode, lines[-1][:200] if lines and done.returncode > 0 else "")


def probe(env: Mapping[str, str], timeout: float = PROBE_TIMEOUT_S) -> Verdict:
    """Run the probe child with extra buffer types on, and again with them off when that died by a signal."""
    with_extra = run_probe(True, env, timeout)
    if with_extra.clean:
        return Verdict("on", "extra CPU buffer types on: the CPU probe ran clean with them")
    if not with_extra.killed:
        note = f"extra CPU buffer types on (llama.cpp's default): the CPU probe {with_extra}"
        return Verdict("on", note, conclusive=False)
    without = run_probe(False, env, timeout)
    if without.clean:
        return Verdict(
            "off",
            f"extra CPU buffer types off: the CPU probe {with_extra} with them "
            "(ggml's AMX or repacked kernels fault on this CPU) and ran clean without",
        )
    if without.killed:
        return Verdict(
            "unsupported",
            f"this llama-cpp-python build uses instructions this CPU lacks (the CPU probe {without} with and "
            f"without ggml's extra buffer types); reinstall a portable build: {REBUILD}",
        )
    note = f"extra CPU buffer types off: the CPU probe {with_extra} with them and {without} without"
    return Verdict("off", note, conclusive=False)  # on is the one path seen to die


def decide(env: Mapping[str, str], cache: Path, key: str, timeout: float = PROBE_TIMEOUT_S) -> CpuChoice:
    """The override when set, else the cached verdict for `key`, else a fresh probe (cached when conclusive)."""
    chosen = mode(env)
    if chosen != "auto":
        return CpuChoice(chosen == "on", f"extra CPU buffer types {chosen}: set by {ENV}={chosen}")
    path = cache / f"cpu-guard-{key[:24]}.json"
    verdict = _read(path, key)
    if verdict is None:
        verdict = probe(env, timeout)
        if verdict.conclusive:
            _write(path, key, verdict)
    return verdict.choice()


def _read(path: Path, key: str) -> Verdict | None:
    try:
        data = json.loads(path.read_text())
        if data["key"] == key and data["outcome"] in ("on", "off", "unsupported"):
            return Verdict(data["outcome"], str(data["note"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _write(path: Path, key: str, verdict: Verdict) -> None:
    """Atomically: concurrent probers each rename a whole file into place."""
    data = {"key": key, "outcome": verdict.outcome, "note": verdict.note, "llama_cpp": llama_cpp.__version__}
    tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, path)
    except OSError as exc:  # a read-only cache costs a probe per process, nothing else
        log.info("cannot cache the CPU probe's verdict at %s: %s", path, exc)
    finally:
        tmp.unlink(missing_ok=True)


_lock = threading.Lock()
_chosen: dict[str, CpuChoice | CpuUnsupportedError] = {}  # by mode: once per process


def extra_buffers() -> CpuChoice:
    """The choice for this process: the probe runs at most once, and the first call logs what was chosen
    (a warning when the probe turned the extra buffer types off, so that it shows on stderr)."""
    chosen = mode(os.environ)
    with _lock:
        if chosen not in _chosen:
            try:
                _chosen[chosen] = decide(os.environ, cache_dir(), build_key() if chosen == "auto" else "")
            except CpuUnsupportedError as exc:
                _chosen[chosen] = exc
            got = _chosen[chosen]
            news = chosen == "auto" and isinstance(got, CpuChoice) and not got.extra_buffers
            message = got.note if isinstance(got, CpuChoice) else str(got)  # an error is said where it is caught
            log.log(logging.WARNING if news else logging.INFO, "moechat: %s", message)
        got = _chosen[chosen]
    if isinstance(got, CpuUnsupportedError):
        raise CpuUnsupportedError(str(got))
    return got
