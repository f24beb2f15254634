"""What the chat tab's controls say about the next turn (sampling preset, reply length, seed, prompt format, the
user's name and persona), and the chat.TurnOptions they mean. No gradio here: the wiring builds a TurnInputs
from the controls' values once per event (fields and controls share their names).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from moechat import chat
from moechat.engine.types import Sampling
from moechat.prompt.st_preset import StPreset

ST_FORMAT = "SillyTavern preset"  # the format picker's entry for imported SillyTavern presets
PRESETS: dict[str, Sampling] = {
    "Balanced": Sampling(temperature=0.8, top_p=0.95, top_k=40, min_p=0.05, repeat_penalty=1.05),
    "Precise": Sampling(temperature=0.3, top_p=0.9, top_k=20, min_p=0.1, repeat_penalty=1.05),
    "Creative": Sampling(temperature=1.1, top_p=0.98, top_k=0, min_p=0.02, repeat_penalty=1.1),
    "Greedy (repeatable)": Sampling(temperature=0.0),
}


@dataclass(frozen=True)
class TurnInputs:
    """The controls' values as Gradio gives them (a slider or number box may give a float, a box None)."""

    preset: str
    max_tokens: float
    seed: float | None  # -1 or None: random
    fmt: str | None  # "auto", "" or None: the model's own template
    user_name: str | None
    persona: str | None

    def options(self, st_preset: StPreset | None = None, persona_id: int | None = None) -> chat.TurnOptions:
        """The turn's options; the format "SillyTavern preset" uses `st_preset` (imported in the format picker);
        `persona_id` is the persona picked in the persona panel."""
        base = PRESETS.get(self.preset, PRESETS["Balanced"])
        seed = None if self.seed is None or self.seed == -1 else int(self.seed)
        sampling = replace(base, max_tokens=int(self.max_tokens), seed=seed)
        fmt_name = None if self.fmt in ("", "auto", None, ST_FORMAT) else self.fmt
        preset = st_preset if self.fmt == ST_FORMAT else None
        return chat.TurnOptions(
            sampling=sampling,
            format=fmt_name,
            user_name=self.user_name or "You",
            persona=self.persona or "",
            persona_id=persona_id,
            preset=preset,
        )
