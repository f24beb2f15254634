"""Fuzz every reader of outside data with hypothesis: structured mutations of valid inputs + random bytes.

Each case runs under a per-case time limit (SIGALRM). A case ends in one of: ok, the reader's domain error
(CardError, StoreError, EngineError), an unhandled exception (anything else: a bug), or a hang (over the
limit). Memory: process RSS before and after each reader and the peak (ru_maxrss) are reported.

    python bench/fuzz_readers.py                   # 10,000 cases per reader, table on stdout
    python bench/fuzz_readers.py --cases 500 --readers card_json,st_jsonl --json out.json
    python bench/fuzz_readers.py --control        # same cases, not read: hypothesis's own RSS growth

With several readers each runs in its own interpreter, so RSS figures are per reader.

tests/test_fuzz_readers.py runs a few hundred cases per reader through the same harness.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import logging
import resource
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from moechat.cards.json import DATA_FIELDS

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from moechat.cards import lore_scan, lorebook, world_info  # noqa: E402
from moechat.cards.card import Card, card_bytes, read_card  # noqa: E402
from moechat.chatfiles import sillytavern, tgw  # noqa: E402
from moechat.errors import CardError, EngineError, StoreError  # noqa: E402
from moechat.gguf.info import read_info  # noqa: E402
from moechat.gguf.tiny import TinySpec, write_tiny_gguf  # noqa: E402

CASE_LIMIT_S = 5.0


class Hang(BaseException):
    """Raised by SIGALRM when one case runs over the limit (BaseException: readers must not swallow it)."""


@dataclass
class Report:
    reader: str
    cases: int = 0
    ok: int = 0
    domain_errors: int = 0
    unhandled: dict[str, str] = field(default_factory=dict)  # "Type at file:line" -> sample input (repr)
    unhandled_count: int = 0
    hangs: int = 0
    slowest_s: float = 0.0
    seconds: float = 0.0
    rss_start_mib: float = 0.0
    rss_end_mib: float = 0.0
    peak_rss_mib: float = 0.0

    def row(self) -> str:
        return (
            f"{self.reader:<12} {self.cases:>7} {self.ok:>6} {self.domain_errors:>7} {self.unhandled_count:>9} "
            f"{self.hangs:>5} {self.slowest_s:>8.3f} {self.seconds:>7.1f} {self.rss_start_mib:>8.1f} "
            f"{self.rss_end_mib:>8.1f} {self.peak_rss_mib:>8.1f}"
        )


HEADER = (
    f"{'reader':<12} {'cases':>7} {'ok':>6} {'domain':>7} {'unhandled':>9} {'hangs':>5} {'slowest':>8} "
    f"{'seconds':>7} {'rss0 MiB':>8} {'rss1 MiB':>8} {'peak MiB':>8}"
)


def rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _on_alarm(_signum: int, _frame: Any) -> None:
    raise Hang


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/moechat/" in f.filename] or frames
    last = ours[-1] if ours else None
    loc = f"{Path(last.filename).name}:{last.lineno}" if last else "?"
    return f"{type(exc).__name__} at {loc}"


def run_case(report: Report, call: Callable[[Any], None], case: Any, domain: tuple[type[Exception], ...]) -> None:
    report.cases += 1
    start = time.perf_counter()
    signal.setitimer(signal.ITIMER_REAL, CASE_LIMIT_S)
    try:
        call(case)
        report.ok += 1
    except Hang:
        report.hangs += 1
        report.unhandled.setdefault(f"hang over {CASE_LIMIT_S}s", repr(case)[:300])
    except domain:
        report.domain_errors += 1
    except Exception as exc:  # the point of the fuzzer: anything else is a finding
        report.unhandled_count += 1
        report.unhandled.setdefault(_where(exc), f"{exc!s:.200} | input {case!r:.300}")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    report.slowest_s = max(report.slowest_s, time.perf_counter() - start)


# generic strategies

JSON_LEAF = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.sampled_from(["", "<script>alert(1)</script>", "{{char}}", "/(a+)+$/", "2024-13-45@99h99m99s", "0"])
)
JSON_VALUE = st.recursive(
    JSON_LEAF,
    lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=12), kids, max_size=5),
    max_leaves=25,
)


def keyed(keys: list[str], values: st.SearchStrategy = JSON_VALUE) -> st.SearchStrategy[dict[str, Any]]:
    """Dicts whose keys mostly come from a reader's own vocabulary, with values of any JSON type."""
    key = st.sampled_from(keys) | st.text(max_size=10)
    return st.dictionaries(key, values, max_size=len(keys) + 2)


def mutate(raw: bytes, ops: list[tuple[int, int, bytes]]) -> bytes:
    """Apply byte-level mutations: 0 overwrite, 1 insert, 2 delete, 3 duplicate, 4 truncate, 5 bit flip."""
    data = bytearray(raw)
    for op, pos, blob in ops:
        if not data:
            data += blob
            continue
        i = pos % len(data)
        n = 1 + (blob[0] if blob else 0) % 64
        if op == 0:
            data[i : i + len(blob)] = blob
        elif op == 1:
            data[i:i] = blob
        elif op == 2:
            del data[i : i + n]
        elif op == 3:
            data[i:i] = data[i : i + n]
        elif op == 4:
            del data[i:]
        else:
            data[i] ^= 1 << (pos % 8)
    return bytes(data)


def mutations(seeds: list[bytes], focus: int | None = None) -> st.SearchStrategy[bytes]:
    """A valid seed with 1-6 byte mutations (positions within the first `focus` bytes when given)."""
    pos = st.integers(0, (focus or 2**20) - 1)
    op = st.tuples(st.integers(0, 5), pos, st.binary(min_size=1, max_size=12))
    seed = st.integers(0, len(seeds) - 1).map(lambda i: seeds[i])  # (sampled_from would repr the seeds)
    return st.builds(mutate, seed, st.lists(op, min_size=1, max_size=6))


def interesting_ints() -> st.SearchStrategy[int]:
    return st.sampled_from([0, -1, 1, 2**31 - 1, 2**31, 2**32 - 1, 2**63 - 1, 2**64 - 1]) | st.integers(0, 2**64 - 1)


# cards

CARD_KEYS = list(DATA_FIELDS)  # every field of a card's data, as the card model knows them
ENTRY_KEYS = [
    "keys",
    "content",
    "extensions",
    "enabled",
    "insertion_order",
    "case_sensitive",
    "name",
    "priority",
    "id",
    "comment",
    "selective",
    "secondary_keys",
    "constant",
    "position",
    "use_regex",
]
BOOK_KEYS = ["name", "description", "scan_depth", "token_budget", "recursive_scanning", "extensions", "entries"]


def lore_entries() -> st.SearchStrategy[dict[str, Any]]:
    return keyed(ENTRY_KEYS) | st.fixed_dictionaries(
        {"keys": st.lists(st.text(max_size=8), max_size=3), "content": st.text(max_size=30)},
        optional={"use_regex": st.booleans(), "position": JSON_LEAF, "extensions": keyed(["position", "depth"])},
    )


def lorebook_objs() -> st.SearchStrategy[Any]:
    book = keyed(BOOK_KEYS) | st.fixed_dictionaries(
        {"entries": st.lists(lore_entries(), max_size=4)}, optional={"token_budget": JSON_LEAF}
    )
    return book | st.builds(lambda b: {"spec": "lorebook_v3", "data": b}, book) | JSON_VALUE


def card_objs() -> st.SearchStrategy[Any]:
    data = keyed(CARD_KEYS) | st.fixed_dictionaries(
        {"name": st.text(max_size=20)},
        optional={"character_book": lorebook_objs(), "alternate_greetings": JSON_VALUE, "assets": JSON_VALUE},
    )
    wrapped = st.builds(lambda s, d: {"spec": s, "spec_version": "3.0", "data": d}, st.sampled_from(SPECS), data)
    v1 = keyed(["name", "char_name", "char_persona", "world_scenario", "char_greeting", "example_dialogue"])
    return wrapped | data | v1 | JSON_VALUE


SPECS = ["chara_card_v2", "chara_card_v3", "lorebook_v3", "", "x"]


def to_json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()


def seed_cards() -> list[Card]:
    book = {"entries": [{"keys": ["ship"], "content": "The ship is old."}]}
    card = Card(name="Sera", description="A pilot.", first_mes="Hi {{user}}", alternate_greetings=["Yo"])
    card.character_book = lorebook.read_lorebook(book)
    return [card, Card(name="Min")]


def png_with(chunks: dict[str, str]) -> bytes:
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value)
    out = io.BytesIO()
    Image.new("RGB", (4, 4)).save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def zip_of(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return out.getvalue()


def b64(obj: Any) -> str:
    return base64.b64encode(to_json_bytes(obj)).decode()


def read_json_card(raw: bytes) -> None:
    read_card(raw, filename="card.json")


def read_yaml_card(raw: bytes) -> None:
    read_card(raw, filename="card.yaml")


def card_json_cases() -> st.SearchStrategy[bytes]:
    seeds = [card_bytes(c, "json") for c in seed_cards()]
    return mutations(seeds) | st.builds(to_json_bytes, card_objs()) | st.binary(max_size=300)


def card_png_cases() -> st.SearchStrategy[bytes]:
    seeds = [card_bytes(c, "png") for c in seed_cards()]
    chunk_text = st.builds(b64, card_objs()) | st.text(max_size=60)
    chunks = st.dictionaries(st.sampled_from(["chara", "ccv3", "Comment"]), chunk_text, min_size=1, max_size=2)
    structured = st.builds(png_with, chunks)
    junk = st.binary(max_size=300).map(lambda b: b"\x89PNG\r\n\x1a\n" + b)
    return mutations(seeds, focus=4096) | structured | junk


def card_charx_cases() -> st.SearchStrategy[bytes]:
    seeds = [card_bytes(c, "charx") for c in seed_cards()]
    names = st.sampled_from(["card.json", "assets/icon/images/main.png", "x.txt", "../evil", "/abs", "a/" * 20])
    files = st.dictionaries(names, st.builds(to_json_bytes, card_objs()) | st.binary(max_size=100), max_size=4)
    structured = st.builds(zip_of, files)
    return mutations(seeds) | structured | st.binary(max_size=300).map(lambda b: b"PK\x03\x04" + b)


# lorebook: read, then activate against a chat (a lorebook that parses must also be usable)


def use_lorebook(obj: Any) -> None:
    book = lorebook.read_lorebook(obj)
    rules = world_info.book_rules(book)
    lore_scan.scan(rules, ["the ship is old", "SHIP <b>x</b>"], lambda s: len(s) // 4 + 1, budget=200)
    world_info.to_world_info(book).dumps()


def lorebook_cases() -> st.SearchStrategy[Any]:
    return lorebook_objs()


# chat imports

ST_MESSAGE_KEYS = ["name", "is_user", "is_system", "send_date", "mes", "swipes", "swipe_id", "swipe_info", "extra"]
ST_HEADER_KEYS = ["user_name", "character_name", "create_date", "chat_metadata"]


def st_line(obj: Any) -> str:
    return json.dumps(obj, allow_nan=True)


def st_text(lines: list[str], junk: list[str]) -> str:
    return "\n".join(lines + junk)


def st_cases() -> st.SearchStrategy[str]:
    seed = (ROOT / "tests" / "data" / "st_full.jsonl").read_text(encoding="utf-8")
    header = st.builds(st_line, keyed(ST_HEADER_KEYS))
    dates = st.sampled_from(["2024-13-45@99h99m99s", "2024-02-30@01h02m03s", "1e400", "NaN", "Infinity", "-1e308"])
    message = keyed(ST_MESSAGE_KEYS, JSON_VALUE | dates) | st.fixed_dictionaries(
        {"mes": st.text(max_size=20)},
        optional={"swipes": JSON_VALUE, "swipe_id": interesting_ints(), "send_date": JSON_LEAF | dates},
    )
    structured = st.builds(
        st_text,
        st.lists(header, max_size=1).flatmap(
            lambda h: st.lists(st.builds(st_line, message), max_size=5).map(h.__add__)
        ),
        st.lists(st.text(max_size=20), max_size=2),
    )
    mutated = mutations([seed.encode()]).map(lambda b: b.decode("utf-8", "replace"))
    return structured | mutated | st.text(max_size=200)


def parse_st(text: str) -> None:
    sillytavern.parse_jsonl(text, title="fuzz")


TGW_KEYS = ["internal", "visible", "data", "data_visible", "metadata"]


def tgw_cases() -> st.SearchStrategy[bytes]:
    seed = (ROOT / "tests" / "data" / "tgw_legacy.json").read_bytes()
    row = st.lists(st.text(max_size=15) | JSON_LEAF, min_size=0, max_size=3)
    meta_value = keyed(["timestamp", "versions", "current_version_index"])
    history = st.fixed_dictionaries(
        {"internal": st.lists(row, max_size=4)},
        optional={"visible": st.lists(row, max_size=4), "metadata": st.dictionaries(st.text(max_size=12), meta_value)},
    )
    structured = st.builds(to_json_bytes, history | keyed(TGW_KEYS))
    return structured | mutations([seed]) | st.binary(max_size=200)


_TMP = Path(tempfile.mkdtemp(prefix="moechat-fuzz-"))


def read_tgw(raw: bytes) -> None:
    path = _TMP / "Fuzz" / "history.json"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(raw)
    tgw.read_file(path)


# GGUF metadata


def gguf_seed() -> bytes:
    spec = TinySpec(n_layers=1, n_embd=16, n_ff=32, n_heads=2, n_kv_heads=1, expert_names=("A", "B"))
    return write_tiny_gguf(_TMP / "seed.gguf", spec).read_bytes()


GGUF_VALUES = st.integers(-(2**40), 2**40) | st.text(max_size=10) | st.floats(width=32) | st.booleans()


def gguf_metadata(fields: dict[str, Any]) -> bytes:
    """A tensor-less GGUF whose metadata values have arbitrary types (strings for counts, etc.)."""
    import gguf

    logging.getLogger("gguf").setLevel(logging.ERROR)  # it warns about the overwritten architecture
    path = _TMP / "meta.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    for key, value in fields.items():
        writer.add_key_value(key, value, _gguf_type(value))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


def _gguf_type(value: Any) -> Any:
    import gguf

    if isinstance(value, bool):
        return gguf.GGUFValueType.BOOL
    if isinstance(value, int):
        return gguf.GGUFValueType.INT64
    if isinstance(value, float):
        return gguf.GGUFValueType.FLOAT32
    if isinstance(value, list):
        return gguf.GGUFValueType.ARRAY
    return gguf.GGUFValueType.STRING


GGUF_KEYS = [
    "llama.block_count",
    "llama.embedding_length",
    "llama.expert_count",
    "llama.expert_used_count",
    "llama.context_length",
    "general.file_type",
    "general.name",
    "tokenizer.chat_template",
    "tokenizer.ggml.bos_token_id",
    "moechat.expert_names",
]


def gguf_cases() -> st.SearchStrategy[bytes]:
    seed = gguf_seed()
    value = (
        GGUF_VALUES
        | st.lists(st.text(max_size=5), min_size=1, max_size=3)
        | st.lists(st.integers(0, 9), min_size=1, max_size=3)
    )
    arch = st.sampled_from(["llama", "qwen2moe", ""]) | st.integers(0, 9)
    fields = st.builds(
        lambda a, rest: {"general.architecture": a, **rest}, arch, st.dictionaries(st.sampled_from(GGUF_KEYS), value)
    )
    return (
        mutations([seed], focus=12_000)
        | st.builds(gguf_metadata, fields)
        | st.binary(max_size=200).map(b"GGUF".__add__)
    )


def read_gguf(raw: bytes) -> None:
    path = _TMP / "case.gguf"
    path.write_bytes(raw)
    read_info(path, allow_dense=True)


# the table of readers


@dataclass(frozen=True)
class Reader:
    cases: Callable[[], st.SearchStrategy[Any]]
    call: Callable[[Any], None]
    domain: tuple[type[Exception], ...]


READERS: dict[str, Reader] = {
    "card_json": Reader(card_json_cases, read_json_card, (CardError,)),
    "card_yaml": Reader(
        lambda: card_json_cases() | st.text(max_size=200).map(str.encode), read_yaml_card, (CardError,)
    ),
    "card_png": Reader(card_png_cases, read_json_card, (CardError,)),
    "card_charx": Reader(card_charx_cases, read_json_card, (CardError,)),
    "lorebook": Reader(lorebook_cases, use_lorebook, (CardError,)),
    "st_jsonl": Reader(st_cases, parse_st, (StoreError,)),
    "tgw_json": Reader(tgw_cases, read_tgw, (StoreError,)),
    "gguf": Reader(gguf_cases, read_gguf, (EngineError,)),
}


API_KEYS = ["model", "messages", "prompt", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k"]
API_KEYS += ["min_p", "repetition_penalty", "seed", "stop", "n", "stream", "stream_options", "moechat"]


def api_cases() -> st.SearchStrategy[tuple[str, bytes]]:
    part = keyed(["type", "text"]) | st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=10)})
    content = st.text(max_size=20) | st.lists(part, max_size=3) | JSON_LEAF
    role = st.sampled_from(["system", "developer", "user", "assistant", "tool"]) | JSON_LEAF
    message = keyed(["role", "content", "name"]) | st.fixed_dictionaries(
        {"role": role, "content": content}, optional={"name": JSON_LEAF}
    )
    ext = keyed(["routing", "format"], JSON_LEAF | st.sampled_from(["chatml", "vicuna", "metharme", "nope"]))
    body = keyed(API_KEYS) | st.fixed_dictionaries(
        {"messages": st.lists(message, max_size=3)},
        optional={"prompt": JSON_VALUE, "moechat": ext, "stop": JSON_VALUE, "max_tokens": interesting_ints()},
    )
    plain = st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "user", "assistant"]), "content": st.text(max_size=30)}
    )
    valid = st.fixed_dictionaries(
        {"messages": st.lists(plain, min_size=1, max_size=4), "prompt": st.text(max_size=30)},
        optional={"moechat": ext, "stop": st.lists(st.text(max_size=4), max_size=3), "seed": interesting_ints()},
    )
    raw = st.builds(to_json_bytes, body | valid) | st.binary(max_size=100) | st.text(max_size=60).map(str.encode)
    return st.tuples(st.sampled_from(["/v1/chat/completions", "/v1/completions"]), raw)


class _FakeEngine:
    """Enough of an Engine for prompt rendering: the tiny model's metadata, no llama.cpp."""

    def __init__(self) -> None:
        self.info = read_info(write_tiny_gguf(_TMP / "api.gguf", TinySpec(n_layers=1, n_embd=16, n_ff=32)))


def api_reader() -> Reader | None:
    """OpenAI-compatible request bodies through FastAPI's TestClient (no model loaded: a valid body ends in
    503 no_model, an invalid one in 400), then rendered to a prompt with the tiny model's metadata and its
    samplers mapped."""
    try:
        from fastapi import FastAPI
        from fastapi.testclient import TestClient

        from moechat.api import routes as api
        from moechat.api import schema as api_schema
        from moechat.api.chat_prompt import chat_prompt
        from moechat.api.samplers import SamplerError, settings
        from moechat.errors import PromptError
        from moechat.prompt import formats
    except ImportError:
        return None
    app = FastAPI()
    app.include_router(api.api_router(lambda: None))
    client = TestClient(app)  # raises server-side exceptions in the test: an unhandled one is a finding
    info = _FakeEngine().info

    def call(case: tuple[str, bytes]) -> None:
        path, raw = case
        response = client.post(path, content=raw, headers={"content-type": "application/json"})
        body = response.json()
        if response.status_code not in (400, 503) or "error" not in body:
            raise AssertionError(f"HTTP {response.status_code}: {body}")
        if response.status_code == 400:
            raise api_schema.ApiError(400, body["error"]["message"])
        chat = path.endswith("chat/completions")
        req = api_schema.parse(api_schema.ChatRequest if chat else api_schema.CompletionRequest, json.loads(raw))
        if isinstance(req, api_schema.ChatRequest):
            name = req.moechat.format or formats.default_format(info.name, info.chat_template)
            chat_prompt(req, formats.get_format(name, info.chat_template))
        else:
            req.prompt_text()
        settings(req, "openai", 4096)

    return Reader(api_cases, call, (api_schema.ApiError, PromptError, SamplerError))


def all_readers() -> dict[str, Reader]:
    api = api_reader()
    return {**READERS, **({"api_body": api} if api else {})}


def fuzz(name: str, reader: Reader, n_cases: int, seed: int = 0) -> Report:
    """Run n_cases hypothesis-generated cases through one reader; never raises for a finding."""
    report = Report(name, rss_start_mib=rss_mib())
    old = signal.signal(signal.SIGALRM, _on_alarm)
    strategy = reader.cases()

    @settings(
        max_examples=n_cases,
        database=None,
        deadline=None,
        derandomize=seed == 0,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def one(case: Any) -> None:
        run_case(report, reader.call, case, reader.domain)

    start = time.perf_counter()
    try:
        one()
    finally:
        signal.signal(signal.SIGALRM, old)
    report.seconds = time.perf_counter() - start
    report.rss_end_mib, report.peak_rss_mib = rss_mib(), peak_rss_mib()
    return report


def run_isolated(name: str, cases: int, control: bool) -> Report:
    """One reader in a fresh interpreter, so its RSS figures are its own."""
    out = _TMP / f"{name}.json"
    cmd = [sys.executable, __file__, "--readers", name, "--cases", str(cases), "--json", str(out), "--quiet"]
    subprocess.run(cmd + (["--control"] if control else []), check=False)
    return Report(**json.loads(out.read_text())[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--readers", default="", help="comma-separated subset (default: all)")
    parser.add_argument("--json", type=Path, help="also write the reports here")
    parser.add_argument("--control", action="store_true", help="generate cases but do not read them (RSS baseline)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    readers = all_readers()
    chosen = [r for r in args.readers.split(",") if r] or list(readers)
    if not args.quiet:
        print(HEADER, flush=True)
    reports = []
    for name in chosen:
        reader = readers[name]
        if len(chosen) > 1:
            report = run_isolated(name, args.cases, args.control)
        else:
            reader = Reader(reader.cases, lambda _case: None, ()) if args.control else reader
            report = fuzz(name, reader, args.cases)
        reports.append(report)
        if not args.quiet:
            print(report.row(), flush=True)
            for where, sample in report.unhandled.items():
                print(f"    {where}: {sample}", flush=True)
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in reports], indent=1, default=str))
    bad = sum(r.unhandled_count + r.hangs for r in reports)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
