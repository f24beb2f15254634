"""SillyTavern 1.12.6's requests to a backend, as data: what its text-completion types and its Chat Completion
"Custom (OpenAI-compatible)" source send, with its default settings (public/scripts/textgen-settings.js,
public/scripts/openai.js) after its server's per-type filtering (src/endpoints/backends/text-completions.js,
chat-completions.js), and where it sends them. Also how it reads the answers back. No SillyTavern code here:
the field lists and values are written out from reading it.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

TYPES = ("ooba", "vllm", "aphrodite", "tabby", "koboldcpp", "llamacpp", "ollama", "huggingface")
GENERATE = {"llamacpp": "/completion", "ollama": "/api/generate"}  # the others: /v1/completions
STATUS = {"tabby": "/v1/model/list", "ollama": "/api/tags", "huggingface": "/info"}  # the others: /v1/models
TOKENIZE = {  # the "API" tokenizer: path and body for a text (src/endpoints/tokenizers.js)
    "ooba": ("/v1/internal/encode", "text"),
    "tabby": ("/v1/token/encode", "text"),
    "koboldcpp": ("/api/extra/tokencount", "prompt"),
    "llamacpp": ("/tokenize", "content"),
    "vllm": ("/tokenize", "prompt"),
    "aphrodite": ("/v1/tokenize", "prompt"),
}
LLAMACPP_ORDER = ["top_k", "tfs_z", "typical_p", "top_p", "min_p", "temperature"]
OOBA_ORDER = ["temperature", "dynamic_temperature", "quadratic_sampling", "top_k", "top_p", "typical_p",
              "epsilon_cutoff", "eta_cutoff", "tfs", "top_a", "min_p", "mirostat"]  # fmt: skip
KOBOLDCPP_ORDER = [6, 0, 1, 3, 4, 2, 5]
VLLM_KEYS = ["model", "prompt", "best_of", "echo", "frequency_penalty", "logit_bias", "logprobs", "max_tokens", "n",
             "presence_penalty", "seed", "stop", "stream", "suffix", "temperature", "top_p", "user", "use_beam_search",
             "top_k", "min_p", "repetition_penalty", "length_penalty", "early_stopping", "stop_token_ids",
             "ignore_eos", "min_tokens", "skip_special_tokens", "spaces_between_special_tokens",
             "truncate_prompt_tokens", "include_stop_str_in_output", "response_format", "guided_json",
             "guided_regex", "guided_choice", "guided_grammar", "guided_decoding_backend",
             "guided_whitespace_pattern"]  # fmt: skip
OLLAMA_KEYS = ["num_predict", "num_ctx", "stop", "temperature", "repeat_penalty", "presence_penalty",
               "frequency_penalty", "top_k", "top_p", "tfs_z", "typical_p", "seed", "repeat_last_n", "mirostat",
               "mirostat_tau", "mirostat_eta", "min_p"]  # fmt: skip
DEFAULTS: dict[str, Any] = {  # textgen-settings.js `settings`
    "temp": 0.7, "top_p": 0.5, "top_k": 40, "top_a": 0, "tfs": 1, "epsilon_cutoff": 0, "eta_cutoff": 0,
    "typical_p": 1, "min_p": 0, "rep_pen": 1.2, "rep_pen_range": 0, "rep_pen_decay": 0, "rep_pen_slope": 1,
    "no_repeat_ngram_size": 0, "penalty_alpha": 0, "num_beams": 1, "length_penalty": 1, "min_length": 0,
    "encoder_rep_pen": 1, "freq_pen": 0, "presence_pen": 0, "skew": 0, "do_sample": True, "early_stopping": False,
    "dynatemp": False, "min_temp": 0, "max_temp": 2.0, "dynatemp_exponent": 1.0, "smoothing_factor": 0.0,
    "smoothing_curve": 1.0, "dry_allowed_length": 2, "dry_multiplier": 0.0, "dry_base": 1.75,
    "dry_sequence_breakers": '["\\n", ":", "\\"", "*"]', "dry_penalty_last_n": 0, "max_tokens_second": 0,
    "seed": -1, "add_bos_token": True, "ban_eos_token": False, "skip_special_tokens": True, "mirostat_mode": 0,
    "mirostat_tau": 5, "mirostat_eta": 0.1, "guidance_scale": 1, "negative_prompt": "", "grammar_string": "",
    "json_schema": {}, "banned_tokens": "", "ignore_eos_token": False, "spaces_between_special_tokens": True,
    "speculative_ngram": False, "temperature_last": True, "n": 1, "xtc_threshold": 0.1, "xtc_probability": 0,
}  # fmt: skip


def textgen_body(
    kind: str,
    prompt: str,
    *,
    stream: bool = False,
    max_tokens: int = 16,
    max_context: int = 2048,
    stop: list[str] | None = None,
    model: str = "",
    logprobs: bool = False,
    **changed: Any,
) -> dict[str, Any]:
    """The body SillyTavern's server posts for a text-completion type `kind` (`changed`: settings moved from
    their defaults, by their names in `DEFAULTS`, plus "logit_bias"/"banned_tokens" as sent)."""
    s = DEFAULTS | changed
    stop = ["\nUser:"] if stop is None else stop
    p: dict[str, Any] = {
        "prompt": prompt, "model": model or None, "max_new_tokens": max_tokens, "max_tokens": max_tokens,
        "logprobs": (5 if kind == "vllm" else 10) if logprobs else None, "temperature": s["temp"],
        "top_p": s["top_p"], "typical_p": s["typical_p"], "typical": s["typical_p"], "sampler_seed": s["seed"],
        "min_p": s["min_p"], "repetition_penalty": s["rep_pen"], "frequency_penalty": s["freq_pen"],
        "presence_penalty": s["presence_pen"], "top_k": s["top_k"], "skew": s["skew"],
        "min_length": s["min_length"] if kind == "ooba" else None, "min_tokens": s["min_length"],
        "num_beams": s["num_beams"] if kind == "ooba" else None,
        "length_penalty": s["length_penalty"] if kind == "ooba" else None,
        "early_stopping": s["early_stopping"] if kind == "ooba" else None, "add_bos_token": s["add_bos_token"],
        "smoothing_factor": s["smoothing_factor"], "smoothing_curve": s["smoothing_curve"],
        "dry_allowed_length": s["dry_allowed_length"], "dry_multiplier": s["dry_multiplier"],
        "dry_base": s["dry_base"], "dry_sequence_breakers": s["dry_sequence_breakers"],
        "dry_penalty_last_n": s["dry_penalty_last_n"], "max_tokens_second": s["max_tokens_second"],
        "sampler_priority": OOBA_ORDER if kind == "ooba" else None,
        "samplers": LLAMACPP_ORDER if kind == "llamacpp" else None, "stopping_strings": stop, "stop": stop,
        "truncation_length": max_context, "ban_eos_token": s["ban_eos_token"],
        "skip_special_tokens": s["skip_special_tokens"], "top_a": s["top_a"], "tfs": s["tfs"],
        "epsilon_cutoff": s["epsilon_cutoff"] if kind == "ooba" else None,
        "eta_cutoff": s["eta_cutoff"] if kind == "ooba" else None, "mirostat_mode": s["mirostat_mode"],
        "mirostat_tau": s["mirostat_tau"], "mirostat_eta": s["mirostat_eta"],
        "custom_token_bans": _ints(s["banned_tokens"]) if kind == "aphrodite" else s["banned_tokens"],
        "banned_strings": [], "api_type": kind, "api_server": "http://127.0.0.1", "legacy_api": False,
        "sampler_order": KOBOLDCPP_ORDER if kind == "koboldcpp" else None,
        "xtc_threshold": s["xtc_threshold"], "xtc_probability": s["xtc_probability"],
    }  # fmt: skip
    if kind in ("vllm", "aphrodite"):
        p |= {"n": s["n"], "ignore_eos": s["ignore_eos_token"], "seed": s["seed"] if s["seed"] >= 0 else None}
        p |= {"spaces_between_special_tokens": s["spaces_between_special_tokens"]}
        if kind == "vllm":
            p["best_of"] = s["n"]
        else:
            p |= {"temperature_last": s["temperature_last"], "guided_grammar": s["grammar_string"]}
            p |= {"epsilon_cutoff": s["epsilon_cutoff"], "eta_cutoff": s["eta_cutoff"]}
            p |= {"guided_json": s["json_schema"], "include_stop_str_in_output": False, "early_stopping": False}
    else:
        p |= {
            "rep_pen": s["rep_pen"], "rep_pen_range": s["rep_pen_range"],
            "repetition_decay": s["rep_pen_decay"] if kind == "tabby" else None,
            "repetition_penalty_range": s["rep_pen_range"],
            "encoder_repetition_penalty": s["encoder_rep_pen"] if kind == "ooba" else None,
            "no_repeat_ngram_size": s["no_repeat_ngram_size"] if kind == "ooba" else None,
            "penalty_alpha": s["penalty_alpha"] if kind == "ooba" else None,
            "temperature_last": s["temperature_last"] if kind in ("ooba", "tabby") else None,
            "speculative_ngram": s["speculative_ngram"] if kind == "tabby" else None,
            "do_sample": s["do_sample"] if kind == "ooba" else None, "seed": s["seed"],
            "guidance_scale": s["guidance_scale"], "negative_prompt": s["negative_prompt"],
            "grammar_string": s["grammar_string"],
            "json_schema": s["json_schema"] if kind in ("tabby", "llamacpp") else None,
            "repeat_penalty": s["rep_pen"], "tfs_z": s["tfs"], "repeat_last_n": s["rep_pen_range"],
            "n_predict": max_tokens, "num_predict": max_tokens, "num_ctx": max_context,
            "mirostat": s["mirostat_mode"], "ignore_eos": s["ban_eos_token"], "n_probs": 10 if logprobs else None,
            "rep_pen_slope": s["rep_pen_slope"],
        }  # fmt: skip
    if kind == "tabby":
        p["n"] = s["n"]
    if kind == "koboldcpp":
        p["grammar"] = s["grammar_string"]
    if kind == "huggingface":
        p |= {"model": "tgi", "top_p": min(max(p["top_p"], 0.0), 0.999), "stop": p["stop"][:4]}
        p["seed"] = s["seed"] if s["seed"] >= 0 else 123456789
    if "logit_bias" in changed:
        p["logit_bias"] = changed["logit_bias"]
    if kind in ("llamacpp", "ollama"):
        bias = [[int(k), v] for k, v in (p.get("logit_bias") or {}).items()]
        p |= {"logit_bias": bias + [[t, False] for t in _ints(s["banned_tokens"])], "grammar": s["grammar_string"]}
        p["cache_prompt"] = True
    if kind == "llamacpp":
        if p.get("json_schema"):
            p.pop("grammar_string"), p.pop("grammar")
        else:
            p.pop("json_schema", None)
    p["stream"] = stream or None  # SillyTavern sets it only to stream
    p = {k: v for k, v in p.items() if v is not None}  # JSON.stringify drops undefined
    if kind == "vllm":
        return {k: v for k, v in p.items() if k in VLLM_KEYS}
    if kind == "ollama":
        options = {k: v for k, v in p.items() if k in OLLAMA_KEYS}
        return {"model": model, "prompt": prompt, "stream": stream, "keep_alive": -1, "raw": True, "options": options}
    return p


def chat_body(messages: list[dict[str, Any]], *, stream: bool = False, max_tokens: int = 16, **changed: Any) -> dict:
    """What SillyTavern's server posts to a "Custom (OpenAI-compatible)" /chat/completions (its defaults:
    temperature 1, penalties 0, top_p 1, seed -1 left out, logit_bias {})."""
    body: dict[str, Any] = {
        "messages": messages, "model": changed.pop("model", "moechat"), "temperature": 1.0, "max_tokens": max_tokens,
        "stream": stream, "presence_penalty": 0, "frequency_penalty": 0, "top_p": 1, "logit_bias": {},
    }  # fmt: skip
    if changed.pop("logprobs", False):
        body |= {"logprobs": True, "top_logprobs": 5}
    return body | changed


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip().lstrip("-").isdigit()]


# ---- reading answers back, as SillyTavern does -----------------------------------------------------------
def extract(kind: str, data: dict[str, Any]) -> str:
    """A whole answer's text (script.js extractMessageFromData)."""
    if kind == "chat":
        return data["choices"][0]["message"]["content"]
    text = (data.get("choices") or [{}])[0].get("text")
    return text if text is not None else data.get("content", data.get("response", ""))


def extra_swipes(data: dict[str, Any]) -> list[str]:
    """Choices after the first: SillyTavern's extra swipes (extractMultiSwipes)."""
    return [c.get("message", {}).get("content") or c.get("text", "") for c in data["choices"][1:]]


def stream_text(kind: str, response: httpx.Response) -> tuple[str, list[str], list[dict[str, Any]]]:
    """A streamed answer as SillyTavern assembles it: (text, extra swipes, every parsed event). Ollama's
    newline-delimited JSON is what SillyTavern's server turns into events."""
    text, swipes, events = "", [], []
    for line in response.iter_lines():
        if kind == "ollama":
            if not line.strip():
                continue
            data = json.loads(line)
            events.append(data)
            text += data.get("response", "")
            continue
        if not line.startswith("data: "):
            continue
        raw = line.removeprefix("data: ")
        if raw == "[DONE]":
            break
        data = json.loads(raw)
        events.append(data)
        choice = (data.get("choices") or [{}])[0]
        piece = choice.get("delta", {}).get("content") if kind == "chat" else choice.get("text")
        piece = piece if piece is not None else data.get("content", "")
        if choice.get("index", 0) > 0:
            while len(swipes) < choice["index"]:
                swipes.append("")
            swipes[choice["index"] - 1] += piece or ""
        else:
            text += piece or ""
    return text, swipes, events
