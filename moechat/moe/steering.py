"""Expert steering: reply with fewer experts than the router picks, for A/B comparison with the normal reply.

Two ways, both giving a model the engine loads like any other:
  - top-1 routing: `top1_engine(path)` = `Engine.load(path, experts_used=1)` (llama.cpp overrides
    `<arch>.expert_used_count`): each token runs only its router's first choice, at full weight.
  - one expert only ("solo"): `solo_expert_gguf(moe_path, i, cache_dir)` writes a dense GGUF whose FFN is expert
    i's. Load it with `Engine.load(path, allow_dense=True)` (it has no router, hence no routing to capture).

For the UI (labelled swipes next to the normal reply): `steering_label(info, mode, expert)` names a variant, e.g.
"top-1 routing" or "solo: Pygmalion".

The solo file is built without requantizing: the stacked `blk.N.ffn_{gate,up,down}_exps.weight` (ggml
[n_in, n_out, n_expert], expert axis outermost) are sliced at expert i as raw bytes, whatever their type, and
written as the dense `blk.N.ffn_{gate,up,down}.weight`. Every other tensor and all metadata are copied, except the
router (`ffn_gate_inp`), `<arch>.expert_*` keys and moechat's expert names; `moechat.solo_expert` records i. The
file is cached in `cache_dir` under a name keyed by a fingerprint of the input (size, modification time, GGUF
header and router bytes: changed routers or a replaced file give a new key) and the expert, and written atomically.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Unpack

import gguf

from moechat.errors import EngineError
from moechat.gguf.info import EXPERT_NAMES_KEY, ModelInfo, expert_labels, open_reader, read_info
from moechat.gguf.write import Planned, raw_bytes, reader_kvs, write_gguf

if TYPE_CHECKING:
    from moechat.engine.engine import Engine
    from moechat.engine.types import LoadOptions

SOLO_VERSION = "1"
SOLO_KEY = "moechat.solo_expert"
VT = gguf.GGUFValueType
_EXPERTS = re.compile(r"blk\.(\d+)\.ffn_(gate|up|down)_exps\.weight")
_HEADER_BYTES = 1 << 20


def top1_engine(path: str | Path, **load_options: Unpack[LoadOptions]) -> Engine:
    """The model loaded with top-1 routing (only each token's first-choice expert runs)."""
    from moechat.engine.engine import Engine

    return Engine.load(path, experts_used=1, **load_options)


def steering_label(info: ModelInfo, mode: str, expert: int | None = None) -> str:
    """A swipe's label: "top-1 routing", or "solo: <expert name>" for mode "solo"."""
    if mode == "top1":
        return "top-1 routing"
    if mode == "solo" and expert is not None:
        return f"solo: {expert_labels(info)[expert]}"
    raise ValueError(f"unknown steering mode {mode!r} (expected 'top1', or 'solo' with an expert)")


def solo_expert_gguf(moe_path: str | Path, expert: int, cache_dir: str | Path) -> Path:
    """A dense GGUF whose FFN is expert `expert`'s (see the module docstring); built once, then reused."""
    src = Path(moe_path)
    info = read_info(src)
    if not 0 <= expert < info.n_experts:
        raise EngineError(f"{src.name} has experts 0..{info.n_experts - 1}; there is no expert {expert}")
    if info.architecture != "llama":
        raise EngineError(f"solo experts are supported for llama-architecture MoEs; {src.name} is {info.architecture}")
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    out = cache / f"{src.name.removesuffix('.gguf')}.solo{expert}-{fingerprint(src)}.gguf"
    if out.is_file():
        return out
    reader = open_reader(src)
    write_gguf(out, list(_metadata(reader, info, expert)), _plan(reader, expert, info.n_layers), progress=False)
    return out


def fingerprint(path: Path) -> str:
    """A short hash of what the solo file depends on: the input's size, mtime, header and routers; the builder."""
    h = hashlib.sha256(f"{SOLO_VERSION}:{path.stat().st_size}:{path.stat().st_mtime_ns}".encode())
    with path.open("rb") as fh:
        h.update(fh.read(_HEADER_BYTES))
    for t in open_reader(path).tensors:
        if t.name.endswith("ffn_gate_inp.weight"):
            h.update(raw_bytes(t).tobytes())
    return h.hexdigest()[:16]


def _plan(reader: gguf.GGUFReader, expert: int, n_layers: int) -> list[Planned]:
    plan: list[Planned] = []
    sliced: set[tuple[int, str]] = set()
    for t in reader.tensors:
        if t.name.endswith("ffn_gate_inp.weight"):
            continue
        if "_shexp" in t.name:
            raise EngineError(f"{t.name}: shared experts are not supported for solo experts")
        m = _EXPERTS.fullmatch(t.name)
        data = raw_bytes(t)  # numpy order, bytes of one row last: [n_expert, n_out, row bytes] for stacked tensors
        if m is not None:
            data = data[expert]
            sliced.add((int(m[1]), m[2]))
        name = f"blk.{m[1]}.ffn_{m[2]}.weight" if m else t.name
        plan.append(Planned.ready(name, t.tensor_type, data))
    missing = {(i, k) for i in range(n_layers) for k in ("gate", "up", "down")} - sliced
    if missing:
        raise EngineError(f"no stacked expert tensors for {sorted(missing)[:3]}...: not a stacked-expert MoE GGUF")
    return plan


def _metadata(reader: gguf.GGUFReader, info: ModelInfo, expert: int) -> Any:
    """(key, value, type, array item type) for every kept key, the MoE keys dropped and the solo keys set."""
    drop = (f"{info.architecture}.expert_", EXPERT_NAMES_KEY)
    yield from (kv for kv in reader_kvs(reader) if kv[0] != "general.name" and not kv[0].startswith(drop))
    yield "general.name", f"{info.name} (solo expert {expert}: {expert_labels(info)[expert]})", VT.STRING, None
    yield SOLO_KEY, expert, VT.UINT32, None
