"""moechat's app: `python app.py` or `moechat-app`, with [--model PATH|owner/repo[:QUANT]|pygwin|demo] [--port N]
(see --help). Wiring only: settings -> model (hub.resolve_model) -> model slot -> store -> bundled characters -> ui ->
launch."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # the app never calls home
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from moechat.config import Settings, load_settings
from moechat.errors import MoechatError


def load_model(settings: Settings):
    """The --model value resolved (local path, Hub repo, alias or the demo) and loaded into a ModelSlot."""
    from moechat.engine.engine import Engine
    from moechat.engine.types import LoadOptions
    from moechat.models.hub import resolve_model
    from moechat.models.slot import ModelSlot

    if settings.model is None:
        print("moechat: preparing the demo model (built once, then cached)...", file=sys.stderr)
    resolved = resolve_model(str(settings.model) if settings.model else None, settings.data_dir)
    for note in resolved.notes:
        print(f"moechat: {note}", file=sys.stderr)
    options: LoadOptions = {
        "n_ctx": settings.n_ctx,
        "n_threads": settings.threads,
        "n_gpu_layers": settings.n_gpu_layers,
        "capture": settings.capture,
        "full_prompt_routing": settings.prompt_routing,
        "exact": settings.exact,
        "n_parallel": settings.parallel,
    }
    return ModelSlot(Engine.load(resolved.path, **options), options, cache_dir=settings.data_dir / "steering")


def main(argv: list[str] | None = None) -> int:
    try:
        settings = load_settings(sys.argv[1:] if argv is None else argv)
        from moechat.library import import_bundled
        from moechat.store.store import Store

        slot = load_model(settings)
        store = Store.open(settings.data_dir)
        if not settings.hosted:
            import_bundled(store, settings.data_dir)
        from moechat.ui.build import build_ui, launch

        demo = build_ui(slot, store, settings)
    except MoechatError as exc:
        print(f"moechat: {exc}", file=sys.stderr)
        return 2

    def mount_api(app) -> None:
        """The OpenAI-compatible /v1 routes, on the same server, serving the slot's current model; a request
        holds a lease from prompt to last token, so a model switch waits for it."""
        from moechat.api.routes import api_key_from_env, api_router

        app.include_router(api_router(slot.get, api_key=api_key_from_env(), lease=slot.use))

    engine = slot.get()
    print(
        f"moechat: {engine.info.name} ({engine.info.n_experts} experts) on http://{settings.host}:{settings.port}, "
        f"{engine.report.n_threads} CPU threads ({engine.report.threads_note}), "
        f"{engine.report.n_parallel} {'reply' if engine.report.n_parallel == 1 else 'replies'} at once"
        + (f" ({engine.report.parallel_note})" if engine.report.parallel_note else ""),
        file=sys.stderr,
    )
    try:
        launch(demo, settings, on_app=mount_api)
    finally:
        slot.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
