"""HTML and Markdown the UI shows, built from data (pure: no gradio, no plotly).

Every piece of text that comes from a model, a card, a message or a file name goes through `html.escape`
here, so hostile text is shown as text and never runs. Colours come from moechat.colors, the same as in
the figures.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from urllib.parse import quote

import numpy as np

from moechat.colors import EXPERT_0, EXPERT_1, NEUTRAL, expert_colors, token_colors
from moechat.routing.summary import Summary, short_names

_VISIBLE_WS = {"\n": "↵\n", "\t": "⇥"}


def esc(text: object) -> str:
    """Escape for HTML text and attribute values (quotes included)."""
    return html.escape(str(text), quote=True)


def display_text(text: str) -> str:
    """Untrusted text for a Markdown view: markup escaped, so `<script>` shows as text, and image syntax
    made literal, so `![x](https://host/pixel.png)` is never fetched (links stay links: they need a click)."""
    return html.escape(text, quote=False).replace("![", "!\\[")


def hover_lines(probs_t: np.ndarray, names: Sequence[str]) -> str:
    """One token's per-layer routing [L, E] as hover text: 2 experts -> p(second) per layer, else top-1."""
    lines = []
    for layer, row in enumerate(probs_t):
        if not np.isfinite(row).all():
            lines.append(f"L{layer}: -")
        elif len(row) == 2:
            lines.append(f"L{layer}: {names[1]} {row[1]:.2f}")
        else:
            top = int(np.argmax(row))
            lines.append(f"L{layer}: {names[top]} {row[top]:.2f}")
    return "\n".join(lines)


def tokens_html(
    token_texts: Sequence[str],
    probs: np.ndarray,
    expert_names: Sequence[str],
    *,
    layer: int | None = None,
    k: int | None = None,
) -> str:
    """Tokens as <span>s coloured by router weight (continuous when every expert runs, top-1 otherwise),
    each with its per-layer values as a tooltip; a legend first."""
    if len(token_texts) == 0:
        return no_routing_html("No routing yet: send a message.")
    spans = token_spans(token_texts, probs, expert_names, layer=layer, k=k)
    return tokens_block(expert_names, spans, layer=layer, k=k)


def token_spans(
    token_texts: Sequence[str],
    probs: np.ndarray,
    expert_names: Sequence[str],
    *,
    layer: int | None = None,
    k: int | None = None,
) -> list[str]:
    """One coloured <span> per token (each depends only on its own token: streaming renders new ones only)."""
    names = short_names(expert_names)
    colors = token_colors(probs, layer=layer, k=k)
    return [
        f'<span class="moe-tok" style="background:{color}" title="{esc(hover_lines(probs[i], names))}">'
        f"{_token_body(text)}</span>"
        for i, (text, color) in enumerate(zip(token_texts, colors, strict=True))
    ]


def tokens_block(expert_names: Sequence[str], spans: Sequence[str], *, layer: int | None, k: int | None) -> str:
    """The legend, which layer the colours are of, and the token spans."""
    where = "mean over layers" if layer is None else f"layer {layer}"
    head = f'{legend_html(short_names(expert_names), k)}<div class="moe-where">{esc(where)}</div>'
    return f'<div class="moe-tokens">{head}{"".join(spans)}</div>'


def no_routing_html(note: str) -> str:
    """What the token view says when there is nothing to colour (no reply yet, or a reply without routing)."""
    return f'<div class="moe-tokens moe-empty">{esc(note)}</div>'


def _token_body(text: str) -> str:
    shown = "".join(_VISIBLE_WS.get(ch, ch) for ch in text)
    return esc(shown) if shown else "∅"


def legend_html(names: Sequence[str], k: int | None = None) -> str:
    """A gradient between the two experts when every expert runs, else one swatch per expert."""
    if len(names) == 2 and (k is None or k == 2):
        bar = f"background:linear-gradient(90deg,{EXPERT_0},{NEUTRAL},{EXPERT_1})"
        return (
            f'<div class="moe-legend"><span>{esc(names[0])}</span>'
            f'<span class="moe-gradient" style="{bar}"></span><span>{esc(names[1])}</span></div>'
        )
    swatches = "".join(
        f'<span class="moe-swatch" style="background:{c}"></span><span>{esc(n)}</span>'
        for n, c in zip(names, expert_colors(len(names)), strict=True)
    )
    return f'<div class="moe-legend">{swatches}</div>'


def metrics_html(summary: Summary | None, title: str = "this message") -> str:
    """Badge, entropy, mutual information and repeat rate against its chance baseline."""
    if summary is None or summary.n_tokens == 0:
        return '<div class="moe-metrics moe-empty">No routing for this message.</div>'
    rows = [
        ("split", summary.badge),
        ("router entropy", f"{summary.entropy:.2f} (0 = certain, 1 = even)"),
        ("mutual information", f"{summary.mutual_information:.3f} (how much routing depends on the token)"),
        ("repeat rate", f"{summary.repeat_rate:.0%} vs {summary.repeat_baseline:.0%} by chance"),
        ("tokens", str(summary.n_tokens)),
    ]
    body = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows)
    return f'<div class="moe-metrics"><b>{esc(title)}</b><table>{body}</table></div>'


def context_html(report: object | None) -> str:
    """The context meter: tokens per prompt section against the budget, and what was left out."""
    if report is None:
        return '<div class="moe-context moe-empty">The context meter fills in after the first reply.</div>'
    sections = {k: v for k, v in getattr(report, "sections", {}).items() if v}
    total, budget = int(getattr(report, "total", 0)), max(int(getattr(report, "budget", 1)), 1)
    cells = "".join(f"<tr><th>{esc(k.replace('_', ' '))}</th><td>{v}</td></tr>" for k, v in sections.items())
    dropped = _dropped(report) + _lore(report)
    approx = " (estimated)" if getattr(report, "estimated", False) else ""
    bar = f'<progress max="{budget}" value="{min(total, budget)}"></progress>'
    head = f"<b>context: {total} / {budget} tokens{approx}</b>{bar}"
    return f'<div class="moe-context">{head}<table>{cells}</table>{dropped}</div>'


def _lore(report: object) -> str:
    """The lore that fired, with the key (and recursion step) that fired it."""
    fired = getattr(report, "lore", ()) or ()
    items = "".join(f"<li>{esc(line)}</li>" for line in fired)
    return f'<div class="moe-lore">lore that fired:<ul>{items}</ul></div>' if fired else ""


def _dropped(report: object) -> str:
    parts = []
    for attr, what in (("dropped_messages", "old messages"), ("dropped_examples", "example dialogues")):
        n = len(getattr(report, attr, ()) or ())
        if n:
            parts.append(f"{n} {what}")
    lore = getattr(report, "dropped_lore", ()) or ()
    if lore:
        parts.append(f"lore entries {', '.join(str(i) for i in lore)}")
    if getattr(report, "dropped_note", False):
        parts.append("the author's note")
    return f"<div>left out to fit: {esc('; '.join(parts))}</div>" if parts else "<div>nothing left out</div>"


def model_markdown(info: object, report: object, tokens_per_s: float | None = None, occupancy: object = None) -> str:
    """The model panel (Markdown; every value escaped). occupancy: the engine's Occupancy (slots busy, waiting)."""
    names = ", ".join(getattr(info, "expert_names", ()) or ()) or "unnamed"
    speed = f"{tokens_per_s:.1f} tokens/s" if tokens_per_s else "no reply yet"
    rows = [
        ("model", getattr(info, "name", "")),
        ("file", getattr(getattr(info, "path", None), "name", "")),
        ("experts", f"{getattr(info, 'n_experts', 0)} ({names}), {getattr(info, 'n_experts_used', 0)} used per token"),
        ("layers", getattr(info, "n_layers", 0)),
        ("context", f"{getattr(report, 'n_ctx', 0)} tokens per reply (API clients: keep SillyTavern's at most this)"),
        ("quant", getattr(info, "file_type", "")),
        ("GPU layers offloaded", _gpu(report)),
        ("routing capture", getattr(report, "capture", "off")),
        ("CPU threads", _threads(report)),
        ("CPU kernels", getattr(report, "cpu_note", "") or "llama.cpp's default"),
        ("last reply", speed),
        ("replies at once", _parallel(report)),
    ]
    if occupancy is not None:
        rows.append(("right now", queue_status(occupancy)))
    return "\n".join(["| | |", "|---|---|", *(f"| {esc(k)} | {esc(v)} |" for k, v in rows)])


def _parallel(report: object) -> str:
    n, note = getattr(report, "n_parallel", 1), getattr(report, "parallel_note", "")
    return f"{n} ({note})" if note else str(n)


def queue_status(occupancy: object) -> str:
    """'2 of 4 generating, 3 waiting' from an engine's Occupancy."""
    busy, slots, waiting = (getattr(occupancy, name, 0) for name in ("busy", "slots", "waiting"))
    return f"{busy} of {slots} generating, {waiting} waiting"


def queue_place(place: int) -> str:
    """What a waiting turn's reply bubble says (place 1 = next)."""
    where = "yours is next" if place == 1 else f"you are number {place} in the queue"
    return f"⏳ *Waiting for the model: {where}.*"


REINSTALL_GPU = (
    'CMAKE_ARGS="-DGGML_CUDA=on" pip install --force-reinstall --no-cache-dir llama-cpp-python '
    '(Apple silicon: CMAKE_ARGS="-DGGML_METAL=on")'
)


def gpu_note(report: object) -> str:
    """Markdown telling the user their llama.cpp build cannot use a GPU, and how to get one that can ("" if it can)."""
    if getattr(report, "gpu_offload_supported", True):
        return ""
    return f"⚠ This llama.cpp build has no GPU support: every layer runs on the CPU. Reinstall with `{REINSTALL_GPU}`."


def _threads(report: object) -> str:
    """'2 (2 physical cores); prompt 4' from the load report."""
    text = str(getattr(report, "n_threads", ""))
    if note := getattr(report, "threads_note", ""):
        text += f" ({note})"
    batch = getattr(report, "n_threads_batch", 0)
    if batch and batch != getattr(report, "n_threads", batch):
        text += f"; prompt evaluation {batch}"
    return text


def _gpu(report: object) -> str:
    if not getattr(report, "gpu_offload_supported", False):
        return "0 (this llama.cpp build has no GPU offload)"
    return str(getattr(report, "n_gpu_layers", 0))


def card_markdown(name: str, tags: Sequence[str], creator_notes: str, creator: str = "") -> str:
    """A character's details for the gallery: creator notes are shown here and never sent to the model."""
    lines = [f"### {display_text(name)}"]
    if tags:
        lines.append(" ".join(f"`{esc(t)}`" for t in tags))
    if creator:
        lines.append(f"by {display_text(creator)}")
    if creator_notes:
        lines.append("**Creator notes** (shown to you, never sent to the model):\n\n" + display_text(creator_notes))
    return "\n\n".join(lines)


def token_texts_from_offsets(text: str, offsets: Sequence[int] | np.ndarray) -> list[str]:
    """Each token's text from its start in `text` (starts never decrease) to the next token's start. Tokens
    sharing a start (a character split over tokens) give the text to the last of them; -1 (not in the text)
    gives ""."""
    out = [""] * len(offsets)
    following = len(text)  # start of the nearest later token that is in the text
    shared: int | None = None
    for i in range(len(offsets) - 1, -1, -1):
        start = int(offsets[i])
        if start < 0:
            continue
        if start != shared:
            out[i] = text[start:following]
        shared = following = start
    return out


def file_url(path: str) -> str:
    """The URL Gradio serves a file under its allowed paths at (relative: the app may sit under a path prefix)."""
    return "gradio_api/file=" + quote(path)


def chat_message(
    role: str,
    text: str,
    *,
    badge: str = "",
    swipe: tuple[int, int] = (0, 1),
    hidden: bool = False,
    label: str = "",
    face: tuple[str, str] | None = None,
) -> dict:
    """One message for gr.Chatbot in block form (kept verbatim by Gradio): a group member's picture (`face`:
    name, image URL; Gradio's chatbot has one picture per role), the text escaped, then a footer with the swipe
    position, its label (a steered swipe: "top-1 routing", "solo: Xwin"; who said it), the routing badge and the
    hidden flag."""
    body = display_text(text) or "…"
    if face is not None:
        body = f'<img class="moe-face" src="{esc(face[1])}" alt="{esc(face[0])}" title="{esc(face[0])}">' + body
    foot = []
    if swipe[1] > 1:
        foot.append(f"swipe {swipe[0] + 1}/{swipe[1]}")
    if label:
        foot.append(f"<b>{esc(label)}</b>")
    if badge:
        foot.append(esc(badge))
    if hidden:
        foot.append("hidden from the model")
    if foot:
        body += "\n\n<sub>" + " · ".join(foot) + "</sub>"
    return {"role": "user" if role == "user" else "assistant", "content": [{"type": "text", "text": body}]}


CSS = """
.moe-tokens { line-height: 1.9; font-family: var(--font-mono, monospace); font-size: 13px; white-space: pre-wrap; }
.moe-tok { color: #111; border-radius: 3px; padding: 1px 1px; margin: 0 1px 0 0; cursor: help; }
.moe-legend { display: flex; gap: 6px; align-items: center; flex-wrap: wrap;
  font-family: var(--font); font-size: 12px; margin-bottom: 4px; }
.moe-gradient { display: inline-block; width: 120px; height: 10px; border-radius: 5px; }
.moe-swatch { display: inline-block; width: 12px; height: 12px; border-radius: 2px; }
.moe-where { font-size: 11px; opacity: 0.7; margin-bottom: 4px; font-family: var(--font); }
.moe-metrics table, .moe-context table { font-size: 12px; width: 100%; }
.moe-metrics th, .moe-context th { text-align: left; font-weight: 600; padding-right: 8px; }
.moe-context progress { width: 100%; }
.moe-empty { opacity: 0.7; font-size: 13px; }
.moe-face { float: left; width: 40px !important; height: 40px !important; max-width: 40px;
  border-radius: 50% !important; object-fit: cover; margin: 0 10px 4px 0 !important; }
"""
