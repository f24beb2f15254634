"""Incremental UTF-8 decoding and stop-string holding, one piece at a time (pure)."""

import pytest

from moechat.engine.text_release import TextReleaser


def run(pieces: list[bytes], stops: tuple[str, ...] = ()) -> tuple[list[str], bool, str]:
    r = TextReleaser(stops)
    out, stopped = [], False
    for p in pieces:
        text, stopped = r.feed(p)
        out.append(text)
        if stopped:
            break
    return out, stopped, r.flush()


@pytest.mark.parametrize(
    ("pieces", "stops", "released", "stopped", "rest"),
    [
        ([b"Hel", b"lo"], (), ["Hel", "lo"], False, ""),
        ([b"caf", b"\xc3", b"\xa9!"], (), ["caf", "", "é!"], False, ""),  # é split over two tokens
        ([b"\xe2\x9c", b"\x93"], (), ["", "✓"], False, ""),
        ([b"ok\xff", b"x"], (), ["ok\ufffd", "x"], False, ""),  # an invalid byte is replaced, not fatal
        ([b"a", b"\xc3"], (), ["a", ""], False, "\ufffd"),  # a truncated character at the very end
        ([b"Hi\nYo", b"u: there"], ("\nYou:",), ["Hi", ""], True, ""),  # stop across tokens
        ([b"Hi\nYo", b"ga"], ("\nYou:",), ["Hi", "\nYoga"], False, ""),  # held, then ruled out
        ([b"Hi\nYo"], ("\nYou:",), ["Hi"], False, "\nYo"),  # held text comes back on flush
        ([b"ab</s>cd"], ("</s>", "b<"), ["a"], True, ""),  # the earliest stop wins
        ([b"x", b"y"], ("",), ["x", "y"], False, ""),  # an empty stop string is ignored
    ],
)
def test_release(pieces, stops, released, stopped, rest):
    assert run(pieces, stops) == (released, stopped, rest)
