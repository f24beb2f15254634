"""Lorebook key matching: substrings, whole words and regexes, with regex evaluation time-bounded.

Python's `re` cannot be interrupted, so a pattern that could backtrack (an unbounded repeat or a
backreference) is evaluated in a small `python -I -S` worker process that is killed when it runs past
the time limit; such a key then counts as "no match". Patterns without unbounded repeats run
in-process (they cannot blow up). An invalid pattern matches nothing. The worker is shared by every thread
(replies are built for several visitors at once): one question at a time, under a lock.
"""

from __future__ import annotations

import json
import re
import re._constants as sre_c  # Python 3.11+: the parser's opcode names
import re._parser as sre_parse
import select
import subprocess
import sys
import threading
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

REGEX_TIMEOUT_S = 0.25
MAX_PATTERN_CHARS = 1000
SLASH_KEY = re.compile(r"^/(.+)/([a-z]*)$", re.DOTALL)
_worker: subprocess.Popen[bytes] | None = None
_worker_lock = threading.Lock()  # a question and its answer travel through one pipe pair
_WORKER = """import json, re, sys
for line in sys.stdin.buffer:
    pattern, text, flags = json.loads(line)
    try:
        hit = re.search(pattern, text, flags) is not None
    except Exception:
        hit = False
    sys.stdout.buffer.write(b"1\\n" if hit else b"0\\n")
    sys.stdout.buffer.flush()
"""


def compile_key(pattern: str, case_sensitive: bool) -> re.Pattern[str] | None:
    """Compile a regex key; None when it is invalid (an invalid regex matches nothing)."""
    return _compile(pattern, 0 if case_sensitive else re.IGNORECASE)


@lru_cache(maxsize=1024)
def _compile(pattern: str, flags: int) -> re.Pattern[str] | None:
    if not pattern or len(pattern) > MAX_PATTERN_CHARS:
        return None
    try:
        return re.compile(pattern, flags)
    except (re.error, RecursionError, OverflowError, ValueError):
        return None


def slash_regex(key: str, case_sensitive: bool) -> re.Pattern[str] | None:
    """An ST-style `/pattern/flags` key as a compiled regex, or None if `key` is not of that form."""
    found = SLASH_KEY.match(key)
    if not found:
        return None
    flags = 0 if case_sensitive else re.IGNORECASE
    for letter in found.group(2):
        flags |= {"i": re.IGNORECASE, "s": re.DOTALL, "m": re.MULTILINE}.get(letter, 0)
    return _compile(found.group(1), flags)


def key_matches(key: str, text: str, *, case_sensitive: bool, whole_words: bool = False) -> bool:
    """Plain (non-regex) key: substring match, or whole-word match when asked."""
    key = key.strip()
    if not key:
        return False
    if whole_words:
        regex = _compile(rf"(?:^|\W){re.escape(key)}(?:$|\W)", 0 if case_sensitive else re.IGNORECASE)
        return regex is not None and regex.search(text) is not None
    if case_sensitive:
        return key in text
    return key.casefold() in text.casefold()


def regex_matches(regex: re.Pattern[str] | None, text: str, timeout: float = REGEX_TIMEOUT_S) -> bool:
    """Whether `regex` matches `text`, giving up (False) after `timeout` seconds."""
    if regex is None:
        return False
    if _is_linear(regex.pattern, regex.flags):
        return regex.search(text) is not None
    return _bounded_search(regex, text, timeout)


@lru_cache(maxsize=1024)
def _is_linear(pattern: str, flags: int) -> bool:
    try:
        parsed = sre_parse.parse(pattern, flags)
    except Exception:
        return False
    return _no_backtracking(parsed)


def _no_backtracking(items: Iterable[tuple[object, Any]]) -> bool:
    """items: a parsed pattern (re._parser.SubPattern), a sequence of (opcode, argument) pairs."""
    return all(_op_is_linear(op, arg) for op, arg in items)


def _op_is_linear(op: object, arg: Any) -> bool:
    if op in (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT, sre_c.POSSESSIVE_REPEAT):
        return arg[1] != sre_c.MAXREPEAT and arg[1] <= 50 and _no_backtracking(arg[2])
    if op in (sre_c.GROUPREF, sre_c.GROUPREF_EXISTS):
        return False
    if op in (sre_c.SUBPATTERN, sre_c.ASSERT, sre_c.ASSERT_NOT):
        return _no_backtracking(arg[-1])
    if op == sre_c.ATOMIC_GROUP:
        return _no_backtracking(arg)
    if op == sre_c.BRANCH:
        return all(_no_backtracking(branch) for branch in arg[1])
    return True


def _bounded_search(regex: re.Pattern[str], text: str, timeout: float) -> bool:
    with _worker_lock:
        return _ask_worker(regex, text, timeout)


def _ask_worker(regex: re.Pattern[str], text: str, timeout: float) -> bool:
    global _worker
    if _worker is None or _worker.poll() is not None:
        _worker = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            bufsize=0,
        )
    assert _worker.stdin is not None and _worker.stdout is not None
    try:
        _worker.stdin.write(json.dumps([regex.pattern, text, regex.flags]).encode() + b"\n")
        ready, _, _ = select.select([_worker.stdout], [], [], timeout)
        answer = _worker.stdout.readline() if ready else b""
    except OSError:
        answer = b""
    if answer not in (b"1\n", b"0\n"):
        _worker.kill()
        _worker.wait()
        _worker = None
    return answer == b"1\n"
