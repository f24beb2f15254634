"""The GBNF grammar a generation is constrained by: given as text, or converted from a JSON schema by
llama-cpp-python's converter, and checked before llama.cpp's recursive parser sees it.

llama.cpp's grammar parser reports syntax errors (its sampler constructor returns NULL), but it recurses
once per nested group, so a hostile grammar of a million "(" would overflow the C stack and kill the
process: size and nesting are bounded here first.
"""

from __future__ import annotations

import json

from llama_cpp.llama_grammar import json_schema_to_gbnf

from moechat.errors import SamplingError

MAX_GRAMMAR_CHARS = 256 * 1024
MAX_SCHEMA_CHARS = 64 * 1024
MAX_NESTING = 256  # groups nested in one rule; JSON-schema grammars use about 20


def from_json_schema(schema: str) -> str:
    """The GBNF grammar of a JSON schema (JSON text); SamplingError for a schema the converter refuses."""
    if len(schema) > MAX_SCHEMA_CHARS:
        raise SamplingError(f"json_schema: {len(schema)} characters is more than the {MAX_SCHEMA_CHARS} allowed")
    try:
        parsed = json.loads(schema)
    except json.JSONDecodeError as exc:
        raise SamplingError(f"json_schema: not valid JSON: {exc}") from exc
    _local_refs_only(parsed)
    try:
        return json_schema_to_gbnf(json.dumps(parsed))
    except Exception as exc:  # the converter asserts on what it does not support
        raise SamplingError(f"json_schema: cannot be turned into a grammar: {exc}") from exc


def check(grammar: str) -> str:
    """The grammar, when its size and nesting are safe to hand to llama.cpp's parser; else SamplingError."""
    if not grammar.strip():
        raise SamplingError("grammar: empty")
    if len(grammar) > MAX_GRAMMAR_CHARS:
        raise SamplingError(f"grammar: {len(grammar)} characters is more than the {MAX_GRAMMAR_CHARS} allowed")
    depth = nesting(grammar)
    if depth > MAX_NESTING:
        raise SamplingError(f"grammar: groups nested {depth} deep; at most {MAX_NESTING} are allowed")
    return grammar


def nesting(grammar: str) -> int:
    """The deepest nesting of ( ) groups, outside string literals, character classes and comments."""
    depth = deepest = 0
    i, n = 0, len(grammar)
    while i < n:
        c = grammar[i]
        if c in '"[':
            close = '"' if c == '"' else "]"
            i += 1
            while i < n and grammar[i] != close:
                i += 2 if grammar[i] == "\\" else 1
        elif c == "#":
            while i < n and grammar[i] != "\n":
                i += 1
        elif c == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif c == ")":
            depth = max(depth - 1, 0)
        i += 1
    return deepest


def _local_refs_only(node: object) -> None:
    """A schema may refer to its own parts ("#/$defs/x"), never to a URL or a file."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if ref is not None and (not isinstance(ref, str) or not ref.startswith("#")):
            raise SamplingError(f"json_schema: only local references ('#/...') are allowed, got {ref!r}")
        for value in node.values():
            _local_refs_only(value)
    elif isinstance(node, list):
        for value in node:
            _local_refs_only(value)
