"""Sampler values as clients write them, as the engine takes them (pure): sampler order lists in three
dialects, DRY's sequence breakers, logit biases and token bans."""

from __future__ import annotations

import json
import math

from moechat.engine.types import SAMPLER_ORDER, Sampling

Bias = float | bool
LogitBias = dict[str, Bias] | list[list[int | str | float | bool]] | None


class SamplerError(ValueError):
    """A sampler setting that cannot work: the field (dotted) and what to do."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param


# names of samplers in the order lists of llama.cpp (`samplers`), text-generation-webui (`sampler_priority`)
# and KoboldCpp (`sampler_order`, numbers); None: a sampler moechat cannot run (refused unless neutral)
STAGE_NAMES: dict[str, str | None] = {
    **{name: name for name in SAMPLER_ORDER},
    "typ_p": "typical_p", "typ": "typical_p", "typical": "typical_p", "nucleus": "top_p", "temp": "temperature",
    "repetition_penalty": "penalties", "presence_penalty": "penalties", "frequency_penalty": "penalties",
    "dynamic_temperature": "temperature", "top_a": None, "tfs": None, "tfs_z": None, "epsilon_cutoff": None,
    "eta_cutoff": None, "quadratic_sampling": None, "mirostat": None, "encoder_repetition_penalty": None,
    "no_repeat_ngram": None,
}  # fmt: skip
STAGE_CHARS = {"d": "dry", "k": "top_k", "y": "typical_p", "p": "top_p", "s": "top_n_sigma", "m": "min_p",
               "x": "xtc", "t": "temperature", "e": "penalties"}  # fmt: skip
KOBOLD_ORDER = {0: "top_k", 1: None, 2: None, 3: "typical_p", 4: "top_p", 5: "temperature", 6: "penalties"}


def order(
    samplers: list[str] | str | None,
    priority: list[str] | None,
    kobold: list[int] | None,
    temperature_last: bool | None,
) -> tuple[str, ...]:
    """SAMPLER_ORDER with the stages a client listed placed in its order, the unlisted ones where they were;
    `temperature_last` moves temperature to the end."""
    listed: list[str] = []
    if isinstance(samplers, str):
        listed = [STAGE_CHARS.get(c, c) for c in samplers]
    elif samplers is not None:
        listed = [_stage(name, "samplers") for name in samplers]
    elif priority is not None:
        listed = [_stage(name, "sampler_priority") for name in priority]
    elif kobold is not None:
        for number in kobold:
            if number not in KOBOLD_ORDER:
                raise SamplerError("sampler_order", f"unknown KoboldCpp sampler {number}")
        listed = [s for s in (KOBOLD_ORDER[number] for number in kobold) if s]
    unknown = [s for s in listed if s and s not in SAMPLER_ORDER]
    if unknown:
        raise SamplerError("samplers", f"unknown sampler {unknown[0]!r}; known: {', '.join(SAMPLER_ORDER)}")
    wanted = [s for s in dict.fromkeys(listed) if s]
    slots = iter(wanted)
    order = [next(slots) if stage in wanted else stage for stage in SAMPLER_ORDER]
    if temperature_last:
        order = [s for s in order if s != "temperature"] + ["temperature"]
    return tuple(order)


def _stage(name: str, field: str) -> str:
    """A sampler's stage name; "" for one moechat cannot run (its settings are checked on their own)."""
    key = name.strip().lower()
    for variant in (key, key.replace("-", "_")):
        if variant in STAGE_NAMES:
            return STAGE_NAMES[variant] or ""
    nodash = {k.replace("_", ""): v for k, v in STAGE_NAMES.items()}
    if key.replace("-", "").replace("_", "") in nodash:
        return nodash[key.replace("-", "").replace("_", "")] or ""
    raise SamplerError(field, f"unknown sampler {name!r}")


def breakers(value: str | list[str] | None) -> tuple[str, ...]:
    """DRY's sequence breakers: a list, a JSON array in a string, or a comma-separated list of quoted strings."""
    if value is None:
        return Sampling.dry_breakers
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = [part.strip().strip("\"'") for part in value.split(",")]
        if not isinstance(parsed, list) or not all(isinstance(p, str) for p in parsed):
            raise SamplerError("dry_sequence_breakers", "a list of strings (or a JSON array of strings)")
        value = parsed
    return tuple(v for v in value if v)


def bias_entries(logit_bias: LogitBias, bans: str | list[int] | None) -> list[tuple[int | str, float]]:
    """(token id or text, bias) pairs from logit_bias (OpenAI's object or llama.cpp's list; `false` bans)
    and custom_token_bans ("1,2,3" or a list)."""
    pairs: list[tuple[int | str, Bias]] = []
    if isinstance(logit_bias, dict):
        pairs += [(int(k) if k.lstrip("-").isdigit() else k, v) for k, v in logit_bias.items()]
    elif isinstance(logit_bias, list):
        for i, item in enumerate(logit_bias):
            if len(item) != 2 or isinstance(item[0], bool) or not isinstance(item[1], int | float | bool):
                raise SamplerError(f"logit_bias.{i}", "each entry is [token id or text, bias or false]")
            key, value = item[0], item[1]
            if isinstance(key, float):
                if not key.is_integer():
                    raise SamplerError(f"logit_bias.{i}", f"token ids are integers, got {key}")
                key = int(key)
            pairs.append((key, value if isinstance(value, bool) else float(value)))
    if isinstance(bans, str):
        try:
            bans = [int(x) for x in bans.split(",") if x.strip()]
        except ValueError as exc:
            raise SamplerError("custom_token_bans", "comma-separated token ids") from exc
    pairs += [(tok, False) for tok in bans or []]
    out: list[tuple[int | str, float]] = []
    for key, value in pairs:
        bias = -math.inf if value is False else (0.0 if value is True else float(value))
        out.append((key, bias))
    return out
