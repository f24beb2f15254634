"""The Model tab's events: load another model without a restart. The value is resolved by moechat.hub (a path,
`owner/repo[:quant]`, `pygwin`, `demo`), downloads show progress in the UI, and the loaded engine goes into the
ModelSlot, which closes the old one (and its steered variants) once no request uses it."""

from __future__ import annotations

import logging
from pathlib import Path

import gradio as gr

from moechat.engine.engine import Engine
from moechat.errors import MoechatError
from moechat.models import hub
from moechat.models.slot import ModelSlot
from moechat.ui.html import esc, gpu_note, model_markdown
from moechat.ui.routing import MEAN, layer_choices
from moechat.ui.session import Session
from moechat.ui.views import model_of

log = logging.getLogger(__name__)
HELP = "A GGUF path, a Hub repo `owner/name` or `owner/name:Q4_K_M`, `pygwin`, or `demo`."


def expert_choices(engine: Engine) -> list[str]:
    return list(model_of(engine).expert_names) if engine.info.is_moe else []


class ModelSwitcher:
    def __init__(self, slot: ModelSlot, data_dir: Path) -> None:
        self.slot, self.data_dir = slot, data_dir

    def panel(self, last_rate: float | None = None) -> str:
        engine = self.slot.get()
        return model_markdown(engine.info, engine.report, last_rate, engine.occupancy())

    def refresh(self, session: Session) -> str:
        """The panel as it is now (slots busy, requests waiting), when the Model tab is opened."""
        return self.panel(session.last_rate)

    def status(self, notes: tuple[str, ...] = ()) -> str:
        lines = [f"- {esc(n)}" for n in notes]
        note = gpu_note(self.slot.get().report)
        return "\n".join([*lines, note] if note else lines)

    def load(self, value: str, progress: gr.Progress = gr.Progress()) -> tuple:  # noqa: B008 (Gradio injects it)
        """Resolve, load and switch to `value`. Returns (panel, status, layer picker, expert picker)."""
        value = (value or "").strip() or "demo"
        progress(0, desc=f"resolving {value}")

        def on_download(p: hub.DownloadProgress) -> None:
            progress((p.done, p.total) if p.total else None, desc=f"downloading {p.filename}", unit="bytes")

        try:
            resolved = hub.resolve_model(value, self.data_dir, progress=on_download)
            progress(None, desc=f"loading {resolved.path.name}")
            engine = Engine.load(resolved.path, **self.slot.load_options)
        except MoechatError as exc:
            gr.Warning(esc(exc))
            return (gr.skip(), f"**Could not load {esc(value)}:** {esc(exc)}", gr.skip(), gr.skip())
        except Exception as exc:  # the app stays up with the old model
            log.exception("model load failed")
            gr.Warning(esc(f"loading {value} failed: {exc}"))
            return (gr.skip(), f"**Could not load {esc(value)}:** {esc(exc)}", gr.skip(), gr.skip())
        if resolved.offline:
            gr.Warning("Offline: the model came from the Hugging Face cache.")
        self.slot.switch(engine)
        gr.Info(f"Now chatting with {esc(engine.info.name)}.")
        experts = expert_choices(engine)
        return (
            self.panel(),
            self.status((f"loaded {resolved.path.name} ({resolved.source})", *resolved.notes)),
            gr.Dropdown(choices=layer_choices(engine.info.n_layers), value=MEAN),
            gr.Dropdown(choices=experts, value=experts[0] if experts else None),
        )
