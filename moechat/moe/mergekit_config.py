"""The mergekit-moe YAML config, as moechat's frankenMoE builder reads it (pydantic, strict about typos).

Field names and meanings follow mergekit-moe (`mergekit/moe/config.py`), with local GGUF paths as sources:

    base_model: base.Q4_1.gguf          # attention, norms, embeddings, output head, all metadata
    gate_mode: hidden                   # hidden | hidden_avg | cheap_embed | random | uniform_random
    experts_per_token: 2
    experts:
      - source_model: chat.Q4_1.gguf    # donates its FFN (ffn_gate/up/down) as expert 0
        positive_prompts: ["chat"]
        negative_prompts: ["As an AI"]
        noise_scale: 0.0                # optional: Gaussian noise added to this expert's FFN weights
        residual_scale: 1.0             # optional: scales this expert's ffn_down (its residual output)
        name: Chatter                   # moechat extra: the expert's display name

moechat extras: `name` (the model's general.name) and `seed` (for random gates and noise). mergekit's `dtype`
is accepted and ignored: tensors keep their GGUF types. Relative paths are relative to the config's folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from moechat.errors import ConfigError

CONFIG_KEY = "moechat.mergekit_config"  # GGUF metadata key holding the config text of a built model
GateMode = Literal["hidden", "hidden_avg", "cheap_embed", "random", "uniform_random"]
PROMPT_MODES = frozenset({"hidden", "hidden_avg", "cheap_embed"})


class Expert(BaseModel):
    """One expert: a dense model whose FFN becomes expert i, and the prompts that shape its gate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source_model: str
    positive_prompts: list[str] | None = None
    negative_prompts: list[str] | None = None
    noise_scale: float | None = Field(default=None, ge=0)
    residual_scale: float | None = None
    name: str | None = None

    @property
    def changes_weights(self) -> bool:
        """True when this expert's FFN cannot be copied byte for byte."""
        return bool(self.noise_scale) or self.residual_scale not in (None, 1.0)


class MoEConfig(BaseModel):
    """A mergekit-moe config (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_model: str
    experts: list[Expert] = Field(min_length=1)
    gate_mode: GateMode = "hidden"
    experts_per_token: int = Field(default=2, ge=1)
    dtype: str | None = None
    architecture: str | None = None
    shared_experts: list[Expert] | None = None
    name: str | None = None
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> MoEConfig:
        if self.experts_per_token > len(self.experts):
            raise ValueError(
                f"experts_per_token: {self.experts_per_token} is more than the {len(self.experts)} experts listed"
            )
        if self.shared_experts:
            raise ValueError("shared_experts: llama-architecture MoE GGUFs have no shared experts")
        if self.architecture not in (None, "mixtral", "Mixtral", "llama"):
            raise ValueError(f"architecture: {self.architecture!r} is not supported; moechat builds llama/Mixtral")
        if self.gate_mode in PROMPT_MODES:
            _check_prompts(self.experts, self.gate_mode)
        return self


def _check_prompts(experts: list[Expert], mode: str) -> None:
    for i, e in enumerate(experts):
        if not e.positive_prompts:
            raise ValueError(f"experts[{i}].positive_prompts: gate_mode {mode} needs at least one positive prompt")
    keys = {(tuple(e.positive_prompts or ()), tuple(e.negative_prompts or ())) for e in experts}
    if len(experts) > 1 and len(keys) == 1:
        raise ValueError(
            "experts[*].positive_prompts: every expert has the same prompts, so every gate would be the same "
            "vector and the router could not tell the experts apart"
        )


def parse_config(text: str, source: str = "config") -> MoEConfig:
    """Parse and validate YAML text. Errors raise ConfigError naming the field (e.g. experts[1].noise_scale)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a YAML mapping with base_model, gate_mode and experts")
    try:
        return MoEConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc)}") from None


def _describe(exc: ValidationError) -> str:
    """Pydantic's errors as 'field.path: message' lines, fields written the YAML way: experts[1].name."""
    lines = []
    for err in exc.errors():
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field (a typo?)"
        lines.append(msg if not loc or msg.startswith(loc) else f"{loc}: {msg}")
    return "; ".join(lines)


def load_config(path: str | Path) -> tuple[MoEConfig, str]:
    """Read a config file: the validated config and its exact text (stored in the built GGUF)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the config {p}: {exc}") from exc
    return parse_config(text, source=p.name), text


def resolve(config: MoEConfig, base_dir: str | Path) -> dict[str, Path]:
    """Every model path of the config, keyed by its field name, made absolute against `base_dir`."""
    base = Path(base_dir)
    fields = {"base_model": config.base_model}
    fields |= {f"experts[{i}].source_model": e.source_model for i, e in enumerate(config.experts)}
    return {k: (base / Path(v).expanduser()).resolve() for k, v in fields.items()}
