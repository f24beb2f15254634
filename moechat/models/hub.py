"""Model sources: what a `--model` value names, resolved to a GGUF path. The only module touching huggingface_hub.

A value is one of:
  - a local path to a .gguf file;
  - `demo` (or nothing): the embedded demo frankenMoE, built on first use (moechat.demo);
  - a catalogue alias: `pygwin` (the flagship's quants), `pygwin-fp16` (its fp16 GGUF);
  - a Hub repo `owner/name`, whose .gguf files are listed and one quant picked by QUANT_PREFERENCE
    (or by `quant=`), or `owner/name:FILE.gguf` for an exact file, or `owner/name:Q5_K_M` for a quant.

Downloads go through `hf_hub_download` into the standard Hugging Face cache (HF_HUB_CACHE, ~/.cache/huggingface/hub),
resume an interrupted `.incomplete` file, show a tqdm bar in the terminal, call `progress(DownloadProgress)` for the
UI, and authenticate with HF_TOKEN (huggingface_hub's own token lookup) unless a token is passed. Split GGUFs
(`-00001-of-00003.gguf`) are downloaded whole and the first shard is returned (llama.cpp loads the rest). Offline
(HF_HUB_OFFLINE=1, or the Hub unreachable) the cache is used and `ResolvedModel.notes` says so; a file missing from
the cache offline is an EngineError naming the exact `hf download` command to run online. A local or downloaded file
in the pre-2024 split-expert layout is upgraded once into the data dir and the upgrade returned, with a note.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import huggingface_hub
from huggingface_hub import constants, errors
from huggingface_hub.utils import tqdm as hf_tqdm

from moechat.errors import EngineError

# Preferred quants, best first: quality per byte for chatting on a CPU or a small GPU.
QUANT_PREFERENCE = (
    "Q4_K_M", "Q5_K_M", "Q4_K_S", "Q6_K", "Q8_0", "Q5_K_S", "IQ4_XS", "IQ4_NL", "Q4_0", "Q4_1", "Q5_0", "Q5_1",
    "Q3_K_L", "Q3_K_M", "IQ3_M", "IQ3_S", "Q3_K_S", "IQ3_XS", "IQ3_XXS", "Q2_K", "Q2_K_S", "IQ2_M", "IQ2_S",
    "IQ2_XS", "IQ2_XXS", "IQ1_M", "IQ1_S", "F16", "BF16", "F32",
)  # fmt: skip
CATALOGUE = {  # alias -> Hub repo
    "pygwin": "mradermacher/PygWin-2x7B-GGUF",
    "pygwin-fp16": "Kquant03/PygWin-2x7B-FP16-GGUF",
}
FP16_ALTERNATIVE = {"pygwin": "pygwin-fp16"}  # an alias asked for F16 uses this one
_SHARD = re.compile(r"(?P<base>.+)-(?P<i>\d{5})-of-(?P<n>\d{5})\.gguf")
_PART = re.compile(r"(?P<base>.+\.gguf)\.part(?P<i>\d+)of(?P<n>\d+)")
_QUANT_WORD = re.compile(r"(I?Q\d(_[A-Z0-9]+)*|B?F16|F32|FP16|FP32|MXFP4(_MOE)?)")
_REPO = re.compile(r"[\w.-]+/[\w.-]+")
_SKIP = ("mmproj", "imatrix")  # vision projectors and importance matrices are not chat models


@dataclass(frozen=True)
class DownloadProgress:
    """One progress report: `done` of `total` bytes of `filename` (total None when unknown)."""

    filename: str
    done: int
    total: int | None


@dataclass(frozen=True)
class ResolvedModel:
    """A model file ready for the engine, and where it came from."""

    path: Path  # the GGUF to load (the first shard of a split model)
    source: str  # "local", "demo" or "hub"
    repo: str | None = None
    files: tuple[str, ...] = ()  # the repo files it is made of
    quant: str | None = None
    offline: bool = False
    notes: tuple[str, ...] = ()  # things to tell the user (e.g. offline: using the cache)


@dataclass(frozen=True)
class Candidate:
    """One model in a repo: its quant label (None if the name carries none) and its file(s), shards in order."""

    quant: str | None
    files: tuple[str, ...]


ProgressHook = Callable[[DownloadProgress], None]


@dataclass(frozen=True)
class _Wanted:
    """What one fetch asks the Hub (or its cache) for."""

    repo: str
    file: str | None
    quant: str | None
    cache: Path
    token: str | None


def resolve_model(
    value: str | None,
    data_dir: str | Path,
    *,
    quant: str | None = None,
    token: str | None = None,
    cache_dir: str | Path | None = None,
    progress: ProgressHook | None = None,
    upgrade: bool = True,
) -> ResolvedModel:
    """Resolve a `--model` value (see the module docstring) to a local GGUF, downloading it when needed.

    A pre-2024 split-expert file is upgraded once into data_dir (moechat.gguf.upgrade) and the upgrade returned, with
    a note; `upgrade=False` returns the file as it is (for readers that need only its metadata and routers)."""
    value = (value or "demo").strip()
    if value == "demo":
        from moechat.models.demo import demo_model_path  # builds the demo on first use; imported only when asked for

        return ResolvedModel(Path(demo_model_path(data_dir)), "demo")
    found = _resolve(value, quant, token, cache_dir, progress)
    return _stacked(found, data_dir) if upgrade else found


def _stacked(found: ResolvedModel, data_dir: str | Path) -> ResolvedModel:
    from moechat.gguf.upgrade import ensure_stacked

    path, note = ensure_stacked(found.path, data_dir)
    return dataclasses.replace(found, path=path, notes=(*found.notes, note)) if note else found


def _resolve(
    value: str, quant: str | None, token: str | None, cache_dir: str | Path | None, progress: ProgressHook | None
) -> ResolvedModel:
    path = Path(value).expanduser()
    if path.is_file():
        return ResolvedModel(path, "local")
    if value.lower().endswith(".gguf") and ":" not in value:
        raise EngineError(f"model file not found: {path}. Check the path, or give a Hub repo as owner/name.")
    repo, spec = _split_spec(value)
    alias = repo.lower() if repo.lower() in CATALOGUE else None
    if alias is None and not _REPO.fullmatch(repo):
        raise EngineError(
            f"--model {value!r}: no such file, and not a Hugging Face repo (owner/name), a catalogue alias "
            f"({', '.join(CATALOGUE)}) or 'demo'."
        )
    file, quant = (spec, quant) if spec and spec.lower().endswith(".gguf") else (None, spec or quant)
    if alias and quant and normal_quant(quant) == "F16" and alias in FP16_ALTERNATIVE:
        alias, quant = FP16_ALTERNATIVE[alias], None  # the fp16 repo holds one model
    repo = CATALOGUE[alias] if alias else repo
    return fetch(repo, file=file, quant=quant, token=token, cache_dir=cache_dir, progress=progress)


def _split_spec(value: str) -> tuple[str, str | None]:
    repo, _, spec = value.partition(":")
    return repo.strip(), spec.strip() or None


def fetch(
    repo: str,
    *,
    file: str | None = None,
    quant: str | None = None,
    token: str | None = None,
    cache_dir: str | Path | None = None,
    progress: ProgressHook | None = None,
) -> ResolvedModel:
    """List `repo`'s GGUF files, pick `file` or the preferred quant, download it (or find it in the cache)."""
    cache = Path(cache_dir) if cache_dir else Path(os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE)
    offline = is_offline()
    notes: list[str] = []
    if offline:
        notes.append(f"offline (HF_HUB_OFFLINE=1): using the Hugging Face cache at {cache}")
    wanted = _Wanted(repo, file, quant, cache, token)
    files, offline = _list_files(wanted, offline, notes)
    try:
        chosen = choose(repo, files, file=file, quant=quant)
    except EngineError as exc:
        if not offline:
            raise
        raise EngineError(f"{_not_cached(repo, file, quant, cache, f'{repo}:{file or quant}')} ({exc})") from exc
    paths = [_download(wanted, name, offline, progress) for name in chosen.files]
    return ResolvedModel(Path(paths[0]), "hub", repo, chosen.files, chosen.quant, offline, tuple(notes))


def is_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it (at import) or as it is set now."""
    now = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return bool(constants.HF_HUB_OFFLINE) or now


def _list_files(wanted: _Wanted, offline: bool, notes: list[str]) -> tuple[list[str], bool]:
    repo, cache = wanted.repo, wanted.cache
    if not offline:
        try:
            return huggingface_hub.list_repo_files(repo, token=wanted.token), False
        except errors.GatedRepoError as exc:
            raise EngineError(f"{repo} is gated: accept its terms on huggingface.co and set HF_TOKEN.") from exc
        except errors.RepositoryNotFoundError as exc:
            raise EngineError(f"{repo}: no such model repo on the Hub (or it is private: set HF_TOKEN).") from exc
        except Exception as exc:
            if not is_network_error(exc):
                raise
            notes.append(f"the Hub is unreachable ({type(exc).__name__}): using the Hugging Face cache at {cache}")
    try:
        folder = huggingface_hub.snapshot_download(repo, cache_dir=cache, local_files_only=True)
    except errors.LocalEntryNotFoundError as exc:
        raise EngineError(_not_cached(repo, wanted.file, wanted.quant, cache)) from exc
    return sorted(p.relative_to(folder).as_posix() for p in Path(folder).rglob("*") if p.is_file()), True


def is_network_error(exc: BaseException) -> bool:
    """No route to the Hub: offline mode, a refused or timed-out connection (httpx's TransportError family)."""
    if isinstance(exc, (errors.OfflineModeIsEnabled, ConnectionError, TimeoutError)):
        return True
    return any(c.__name__ == "TransportError" and c.__module__.startswith("httpx") for c in type(exc).__mro__)


def _not_cached(repo: str, file: str | None, quant: str | None, cache: Path, what: str | None = None) -> str:
    if file:
        command = f"hf download {repo} {file}"
    else:
        command = f'hf download {repo} --include "*{normal_quant(quant) if quant else QUANT_PREFERENCE[0]}*.gguf"'
    return (
        f"{what or repo} is not in the Hugging Face cache ({cache}) and the Hub cannot be reached "
        f"(HF_HUB_OFFLINE=1 or no network). Run this once with network access, then try again: {command}"
    )


def _download(wanted: _Wanted, name: str, offline: bool, progress: ProgressHook | None) -> str:
    repo, cache = wanted.repo, wanted.cache
    try:
        path = huggingface_hub.hf_hub_download(
            repo,
            name,
            cache_dir=cache,
            token=wanted.token,
            local_files_only=offline,
            tqdm_class=progress_bar_class(progress),
        )
    except errors.LocalEntryNotFoundError as exc:
        raise EngineError(_not_cached(repo, name, None, cache, f"{repo}/{name}")) from exc
    except errors.GatedRepoError as exc:
        raise EngineError(f"{repo} is gated: accept its terms on huggingface.co and set HF_TOKEN.") from exc
    except errors.HfHubHTTPError as exc:
        raise EngineError(f"downloading {repo}/{name} failed: {exc}") from exc
    if progress is not None:
        size = os.path.getsize(path)
        progress(DownloadProgress(name, size, size))
    return str(path)


def progress_bar_class(hook: ProgressHook | None) -> type[hf_tqdm]:
    """huggingface_hub's tqdm bar (stderr; off with HF_HUB_DISABLE_PROGRESS_BARS=1) that also calls `hook`."""
    if hook is None:
        return hf_tqdm
    report: ProgressHook = hook  # not Optional: the bar's methods below close over it

    class ReportingBar(hf_tqdm):
        def __init__(self, *args: object, **kwargs: object) -> None:
            self._name, self._total, self._done = str(kwargs.get("desc") or ""), kwargs.get("total"), 0
            super().__init__(*args, **kwargs)  # a disabled bar counts nothing: count here

        def update(self, n: float | None = 1) -> bool | None:
            self._done += int(n or 0)
            total = int(self._total) if isinstance(self._total, (int, float)) else None
            report(DownloadProgress(self._name, self._done, total))
            return super().update(n)

    return ReportingBar


# ---- picking a file ------------------------------------------------------------------------------------------
def normal_quant(name: str) -> str:
    """Canonical quant label: upper case, FP16 -> F16, FP32 -> F32."""
    label = name.strip().upper().removesuffix(".GGUF")
    return {"FP16": "F16", "FP32": "F32"}.get(label, label)


def quant_of(filename: str) -> str | None:
    """The quant label in a file name ("PygWin-2x7B.Q4_K_M.gguf" -> "Q4_K_M"), or None."""
    stem = Path(filename).name
    stem = _SHARD.sub(r"\g<base>", stem) if _SHARD.fullmatch(stem) else stem.removesuffix(".gguf")
    words = [w for w in re.split(r"[.\-]", stem.upper()) if _QUANT_WORD.fullmatch(w)]
    return normal_quant(words[-1]) if words else None


def candidates(files: Sequence[str]) -> list[Candidate]:
    """The loadable models among a repo's files: single .gguf files and complete split sets."""
    singles: list[Candidate] = []
    shards: dict[str, dict[int, str]] = {}
    totals: dict[str, int] = {}
    for name in files:
        base = Path(name).name
        if not base.lower().endswith(".gguf") or any(s in base.lower() for s in _SKIP):
            continue
        m = _SHARD.fullmatch(name)
        if m is None:
            singles.append(Candidate(quant_of(name), (name,)))
            continue
        shards.setdefault(m["base"], {})[int(m["i"])] = name
        totals[m["base"]] = int(m["n"])
    for base, parts in shards.items():
        if sorted(parts) != list(range(1, totals[base] + 1)):
            raise EngineError(f"{base}: split into {totals[base]} files but only shards {sorted(parts)} are there.")
        singles.append(Candidate(quant_of(parts[1]), tuple(parts[i] for i in sorted(parts))))
    return singles


def choose(repo: str, files: Sequence[str], *, file: str | None = None, quant: str | None = None) -> Candidate:
    """The model to download: the exact `file` (with its other shards), else `quant`, else by QUANT_PREFERENCE."""
    found = candidates(files)
    if file is not None:
        hit = next((c for c in found if file in c.files or Path(c.files[0]).name == file), None)
        if hit is None:
            raise EngineError(f"{repo} has no file {file}. {_listing(found, files)}")
        return hit
    if not found:
        raise EngineError(f"{repo} has no .gguf model files. {_listing(found, files)}")
    if quant is not None:
        hits = [c for c in found if c.quant == normal_quant(quant)]
        if not hits:
            raise EngineError(f"{repo} has no {normal_quant(quant)} file. {_listing(found, files)}")
        return hits[0]
    rank = {q: i for i, q in enumerate(QUANT_PREFERENCE)}
    labelled = [c for c in found if c.quant is not None]
    if labelled:
        return min(labelled, key=lambda c: (rank.get(c.quant or "", len(rank)), c.files[0]))
    if len(found) == 1:
        return found[0]
    raise EngineError(f"{repo}: cannot tell the quants apart; name one as {repo}:FILE.gguf. {_listing(found, files)}")


def _listing(found: Sequence[Candidate], files: Sequence[str]) -> str:
    parts = sorted({p["base"] for p in (_PART.fullmatch(Path(f).name) for f in files) if p})
    if parts:
        return (
            f"Its models are split into .partNofM pieces ({', '.join(parts)}), which llama.cpp cannot load: "
            "download the pieces, join them in order (cat X.gguf.part1of2 X.gguf.part2of2 > X.gguf) and pass the "
            "joined file's path."
        )
    names = [Path(c.files[0]).name + (f" (+{len(c.files) - 1} shards)" if len(c.files) > 1 else "") for c in found]
    return f"Available: {', '.join(names)}." if names else "It has no .gguf files."
