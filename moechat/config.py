"""Settings for `python app.py`: command-line flags > MOECHAT_* environment variables > defaults.

    settings = load_settings(sys.argv[1:], os.environ)

Every option has a flag and an environment variable (`--n-gpu-layers` <-> `MOECHAT_N_GPU_LAYERS`); booleans
read 1/true/yes/on and 0/false/no/off. Pure: no model, store or UI is touched here.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import overload

from moechat.errors import ConfigError

CAPTURE_MODES = ("auto", "fast", "python", "off")
ENV_PREFIX = "MOECHAT_"
DEFAULT_PARALLEL, DEFAULT_PARALLEL_HOSTED, MAX_PARALLEL = 1, 4, 64
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Settings:
    """Everything app.py needs to start; see `build_parser` for what each field means."""

    model: Path | None = None  # None: the demo frankenMoE built from the bundled SmolLM2
    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    data_dir: Path = Path("data")
    n_gpu_layers: int | None = None  # None: every layer when the build can offload, else 0
    n_ctx: int = 4096
    threads: int | None = None
    capture: str = "auto"
    prompt_routing: bool = True  # routing of every prompt token incl. the last layer (outputs for all of them)
    exact: bool = False  # float32 KV cache, no flash attention: replies independent of the prompt cache
    hosted: bool = False  # one owner per browser instead of one local user
    max_upload_mb: int = 20
    parallel: int = 1  # replies generated at once (continuous batching), each with n_ctx tokens of context


def default_data_dir(env: Mapping[str, str], hosted: bool) -> Path:
    """Where chats live: a mounted /data on a hosted Space when writable, else the per-user data dir."""
    if hosted and os.access("/data", os.W_OK):
        return Path("/data/moechat")
    base = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local" / "share")
    return Path(base) / "moechat"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="app.py",
        description="moechat: chat with a GGUF Mixture-of-Experts model and watch which expert each token "
        "is routed to. Every flag can also be set as an environment variable, e.g. MOECHAT_PORT=8080.",
    )
    p.add_argument(
        "--model",
        type=Path,
        help="a GGUF MoE file, a Hugging Face repo owner/name[:QUANT or :FILE.gguf], pygwin, or demo "
        "(default: the demo model, built on first use)",
    )
    p.add_argument("--host", help="address to listen on (default 127.0.0.1; 0.0.0.0 when hosted)")
    p.add_argument("--port", type=int, help="port to listen on (default 7860)")
    p.add_argument("--share", action=argparse.BooleanOptionalAction, default=None, help="make a public Gradio link")
    p.add_argument("--data-dir", type=Path, help="folder for the chat database, avatars and the demo model")
    p.add_argument("--n-gpu-layers", type=int, help="layers to offload to the GPU (default: all when supported)")
    p.add_argument("--n-ctx", type=int, help="context size in tokens (default 4096)")
    p.add_argument("--threads", type=int, help="CPU threads for generation (default: one per physical core)")
    p.add_argument("--capture", choices=CAPTURE_MODES, help="routing capture: auto, fast (C), python or off")
    p.add_argument(
        "--hosted",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="hosted mode: each browser is its own user (default: on when SPACE_ID is set)",
    )
    p.add_argument(
        "--prompt-routing",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="capture the last layer's routing for prompt tokens too; costs the output head for every prompt "
        "token, about +17%% prompt time on the demo model (default: on)",
    )
    p.add_argument(
        "--exact",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="float32 KV cache and no flash attention: a seeded reply is the same whatever the prompt cache held "
        "(default: off; uses more memory)",
    )
    p.add_argument("--max-upload-mb", type=int, help="largest card upload accepted, in MB (default 20)")
    p.add_argument(
        "--parallel",
        type=int,
        help="replies generated at once, batched in one context with --n-ctx tokens each; more visitors wait "
        f"in a queue (default {DEFAULT_PARALLEL}, or {DEFAULT_PARALLEL_HOSTED} when hosted; at most {MAX_PARALLEL})",
    )
    return p


def load_settings(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Settings from flags (argv) over environment (env) over defaults. Bad values raise ConfigError
    (argparse itself exits with status 2 on unknown flags)."""
    env = dict(os.environ if env is None else env)
    args = vars(build_parser().parse_args(list(argv or [])))
    values = {f.name: _pick(f.name, args, env) for f in fields(Settings)}
    hosted = _bool("hosted", values["hosted"]) if values["hosted"] is not None else bool(env.get("SPACE_ID"))
    return Settings(
        model=_path(values["model"]),
        host=str(values["host"] or ("0.0.0.0" if hosted else "127.0.0.1")),
        port=_int("port", values["port"], 7860, low=1, high=65535),
        share=_bool("share", values["share"]) if values["share"] is not None else False,
        data_dir=_path(values["data_dir"]) or default_data_dir(env, hosted),
        n_gpu_layers=_int("n_gpu_layers", values["n_gpu_layers"], None, low=-1),
        n_ctx=_int("n_ctx", values["n_ctx"], 4096, low=256),
        threads=_int("threads", values["threads"], None, low=1),
        capture=_capture(values["capture"]),
        prompt_routing=_bool("prompt_routing", values["prompt_routing"])
        if values["prompt_routing"] is not None
        else True,
        exact=_bool("exact", values["exact"]) if values["exact"] is not None else False,
        hosted=hosted,
        max_upload_mb=_int("max_upload_mb", values["max_upload_mb"], 20, low=1),
        parallel=_int(
            "parallel",
            values["parallel"],
            DEFAULT_PARALLEL_HOSTED if hosted else DEFAULT_PARALLEL,
            low=1,
            high=MAX_PARALLEL,
        ),
    )


def _pick(name: str, args: Mapping[str, object], env: Mapping[str, str]) -> object:
    """The flag's value when given, else the environment's (MOECHAT_<NAME>), else None."""
    if args.get(name) is not None:
        return args[name]
    return env.get(ENV_PREFIX + name.upper())


def _path(value: object) -> Path | None:
    """The flag's Path or the environment's text as a Path; None when not given."""
    return Path(str(value)) if value else None


@overload
def _int(name: str, value: object, default: int, low: int | None = None, high: int | None = None) -> int: ...
@overload
def _int(name: str, value: object, default: None, low: int | None = None, high: int | None = None) -> int | None: ...
def _int(name: str, value: object, default: int | None, low: int | None = None, high: int | None = None) -> int | None:
    if value is None or value == "":
        return default
    try:
        number = value if isinstance(value, int) else int(str(value))  # the flag's int or the environment's text
    except (TypeError, ValueError):
        raise ConfigError(f"{_where(name)} must be a whole number, got {value!r}") from None
    if (low is not None and number < low) or (high is not None and number > high):
        bounds = f"at least {low}" if high is None else f"between {low} and {high}"
        raise ConfigError(f"{_where(name)} must be {bounds}, got {number}")
    return number


def _bool(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE | _FALSE:
        return text in _TRUE
    raise ConfigError(f"{_where(name)} must be one of 1/0, true/false, yes/no, on/off; got {value!r}")


def _capture(value: object) -> str:
    text = str(value or "auto").strip().lower()
    if text not in CAPTURE_MODES:
        raise ConfigError(f"{_where('capture')} must be one of {', '.join(CAPTURE_MODES)}; got {value!r}")
    return text


def _where(name: str) -> str:
    return f"--{name.replace('_', '-')} / {ENV_PREFIX}{name.upper()}"
