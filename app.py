"""moechat: `python app.py [--model PATH] [--port N] ...` (see --help). Wiring only:
settings -> model -> store -> bundled characters -> ui -> launch."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # the app never calls home
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from moechat.config import Settings, load_settings
from moechat.errors import MoechatError


def model_path(settings: Settings):
    if settings.model is not None:
        return settings.model
    from moechat.demo import demo_model_path

    print("moechat: preparing the demo model (built once, then cached)...", file=sys.stderr)
    return demo_model_path(settings.data_dir)


def main(argv: list[str] | None = None) -> int:
    try:
        settings = load_settings(sys.argv[1:] if argv is None else argv)
        from moechat.engine import Engine
        from moechat.store import Store
        from moechat.ui_library import import_bundled

        engine = Engine.load(
            model_path(settings),
            n_ctx=settings.n_ctx,
            n_threads=settings.threads,
            n_gpu_layers=settings.n_gpu_layers,
            capture=settings.capture,
        )
        store = Store.open(settings.data_dir)
        if not settings.hosted:
            import_bundled(store, settings.data_dir)
        from moechat.ui import build_ui, launch

        demo = build_ui(engine, store, settings)
    except MoechatError as exc:
        print(f"moechat: {exc}", file=sys.stderr)
        return 2
    print(
        f"moechat: {engine.info.name} ({engine.info.n_experts} experts) on http://{settings.host}:{settings.port}",
        file=sys.stderr,
    )
    launch(demo, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
