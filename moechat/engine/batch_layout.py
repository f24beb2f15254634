"""Which sequence and position each captured row belongs to, in a batch that mixes sequences (pure).

One `llama_decode` call gets a batch of tokens, each with its sequence, position and whether its logits are
wanted (an output). llama.cpp splits the batch into micro-batches (ubatches) and runs the graph once per
ubatch; the eval callback sees each graph's `ffn_moe_logits-L` with one row per token of that ubatch, in the
ubatch's order, and in the last layer only the rows of output tokens (llama.cpp drops the others before the
last FFN). How the split orders the tokens depends on the KV cache (llama.cpp's src/llama-batch.cpp and the
memory's `init_batch`):

- unified KV (one stream for every sequence): `split_simple`, consecutive runs of the batch in batch order;
- per-sequence KV streams: `split_equal`, which takes the same number of tokens from every sequence per
  ubatch and concatenates them sequence by sequence, so a batch of unequal sequences comes back reordered
  and spread over several ubatches (a SWA cache can fall back to it too).

The engine therefore asks for a unified KV cache, `n_ubatch == n_batch`, and lays each sequence's tokens out
contiguously. Then llama.cpp makes exactly one ubatch, and in one ubatch both splits keep the batch order
(`split_equal` on contiguous runs of equal length returns them in order of first appearance). One record per
layer is what the callback actually saw, and is checked here: anything else is refused, never guessed at.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from moechat.errors import EngineError


@dataclass
class BatchLayout:
    """The tokens of one decode call in batch order: id, sequence, position and output flag of each."""

    tokens: list[int] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    outputs: list[bool] = field(default_factory=list)

    def add(self, seq: int, start: int, tokens: Sequence[int], outputs: Sequence[bool]) -> range:
        """Append `tokens` of `seq` at positions start.. (contiguous); returns their batch indices."""
        first, n = len(self.tokens), len(tokens)
        if len(outputs) != n:
            raise ValueError(f"{n} tokens but {len(outputs)} output flags")
        self.tokens += tokens
        self.seqs += [seq] * n
        self.positions += range(start, start + n)
        self.outputs += outputs
        return range(first, first + n)

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def n_outputs(self) -> int:
        return sum(self.outputs)


def rows_by_layer(
    layout: BatchLayout, kind: str, records: Iterable[tuple[str, int, np.ndarray]], last_layer: int
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """{layer: (batch indices, rows)} for the captured `kind` tensors of one decode call.

    records: (kind, layer, rows) in the order the callback saw them. Every layer must have been seen once
    (one ubatch) with a row per token, or, in `last_layer`, a row per output token."""
    seen: dict[int, np.ndarray] = {}
    for record_kind, layer, rows in records:
        if record_kind != kind:
            continue
        if layer in seen:
            raise EngineError(
                f"routing capture: layer {layer} ran more than once in one decode call (llama.cpp split the "
                "batch into several micro-batches, so rows cannot be matched to sequences)"
            )
        seen[layer] = rows
    every = np.arange(len(layout))
    outputs = np.flatnonzero(np.asarray(layout.outputs, bool))
    placed = {}
    for layer, rows in seen.items():
        index = outputs if layer == last_layer else every
        if len(rows) != len(index):
            raise EngineError(f"routing capture: layer {layer} gave {len(rows)} rows for {len(index)} tokens")
        placed[layer] = (index, rows)
    return placed
