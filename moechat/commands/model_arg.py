"""The model argument of every `python -m moechat` command: the same values the app's `--model` takes.

    add_model_argument(parser, "model", "the model to trace")
    add_data_dir_argument(parser)
    path = resolve_spec(args.model, args.data_dir)

A value is a GGUF path, `demo`, `pygwin`, `pygwin-fp16` or a Hugging Face repo `owner/name[:QUANT|:FILE.gguf]`,
resolved by moechat.hub.resolve_model (offline: the Hugging Face cache, or the one command to run online). Pre-2024
split-expert files are upgraded once into the data dir, which defaults to the app's (MOECHAT_DATA_DIR, else the
per-user data dir). What resolving has to say (offline, upgraded) goes to stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from moechat.config import default_data_dir as app_default_data_dir

MODEL_SPEC_HELP = (
    "a GGUF path, demo, pygwin, pygwin-fp16, or a Hugging Face repo owner/name[:QUANT|:FILE.gguf] "
    "(offline: from the Hugging Face cache)"
)
_TRUE = {"1", "true", "yes", "on"}


def add_model_argument(parser: argparse.ArgumentParser, *flags: str, what: str, **options: object) -> None:
    """An argument taking a model spec; its help says `what` it is for, then the accepted specs."""
    parser.add_argument(*flags, help=f"{what}: {MODEL_SPEC_HELP}", **options)  # type: ignore[arg-type]


def add_data_dir_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="where the demo model and upgraded legacy files are cached (default: the app's, $MOECHAT_DATA_DIR "
        "or the per-user data dir)",
    )


def default_data_dir(env: Mapping[str, str] | None = None) -> Path:
    """The app's data dir when it runs without --data-dir: MOECHAT_DATA_DIR, else moechat.config's default."""
    env = os.environ if env is None else env
    if value := env.get("MOECHAT_DATA_DIR"):
        return Path(value)
    hosted = env.get("MOECHAT_HOSTED")
    return app_default_data_dir(env, hosted.strip().lower() in _TRUE if hosted else bool(env.get("SPACE_ID")))


def resolve_spec(value: str, data_dir: Path | None = None, *, upgrade: bool = True) -> Path:
    """The GGUF file `value` names (downloaded, built or upgraded when needed); notes go to stderr."""
    from moechat.models.hub import resolve_model  # huggingface_hub is imported only when a model is resolved

    resolved = resolve_model(value, data_dir or default_data_dir(), upgrade=upgrade)
    for note in resolved.notes:
        print(f"moechat: {note}", file=sys.stderr)
    return resolved.path
