"""CI sample of the reader fuzzer (bench/fuzz_readers.py runs >= 10,000 cases per reader): a few hundred cases
per reader, each must end in the reader's domain error or a value: no other exception, no hang."""

from __future__ import annotations

import os

import pytest

from bench.fuzz_readers import all_readers, fuzz

CASES = int(os.environ.get("MOECHAT_FUZZ_CASES", "200"))
READERS = all_readers()


@pytest.mark.parametrize("name", list(READERS))
def test_reader_survives_fuzzing(name: str) -> None:
    report = fuzz(name, READERS[name], CASES)
    assert report.cases >= CASES * 0.9, "hypothesis ran fewer cases than asked"
    assert report.unhandled == {}, f"{report.unhandled_count} unhandled: {report.unhandled}"
    assert report.hangs == 0
    assert (report.ok > 0 and report.domain_errors > 0) or name == "st_jsonl"  # both outcomes are exercised
    assert report.rss_end_mib - report.rss_start_mib < 200
