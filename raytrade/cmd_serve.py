"""``raytrade serve``: the API and the dashboard (``serve.ingress``) on local Ray, on 127.0.0.1."""

from __future__ import annotations

import signal
import time
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from raytrade.defaults import MODEL_NAME
from raytrade.options import settings_or_exit

if TYPE_CHECKING:
    from raytrade.settings import Settings
    from serve.api.app import ApiConfig
    from tune.promotion_watch import PromotionWatcher

console = Console(stderr=True)


def api_config(settings: Settings) -> ApiConfig:
    """The API's config from the settings: the same database, bus, MLflow store, data folder and kill
    switch bounds as the rest of the platform; the token in ``<data_dir>/api_token``."""
    from serve.api.app import ApiConfig

    return ApiConfig(
        database_url=settings.database_url, redis_url=settings.redis_url, tracking_uri=settings.tracking_uri,
        data_dir=settings.data_dir.resolve(), token_file=settings.data_dir.resolve() / "api_token",
        killswitch=settings.killswitch,
    )  # fmt: skip


def start_api(settings: Settings, model: str) -> str:
    """Serve's HTTP proxy on 127.0.0.1:``api_port``, the Predictor of ``model``'s production version and
    the API; return the dashboard's URL."""
    from serve.ingress import deploy_api, start_serve
    from serve.predictor import deploy_predictor

    start_serve(settings.api_port)  # before anything deploys: Serve's HTTP options are fixed at its start
    deploy_predictor(settings.tracking_uri, model)
    return deploy_api(api_config(settings), settings.api_port)


def start_promotion_watch(settings: Settings, interval_s: float = 30.0) -> PromotionWatcher:
    """Record, every ``interval_s``, production alias moves made in the MLflow UI with their gate results
    (``tune.promotion_watch``), in a thread of this process; ``stop()`` it."""
    from tune.promotion_watch import PromotionWatcher

    return PromotionWatcher.open(
        settings.database_url, settings.tracking_uri, settings.mlflow_artifact_root, interval_s=interval_s
    ).start()


def serve_cmd(
    model: str = typer.Option(
        MODEL_NAME, "--model", help="registered model whose production version /predict serves"
    ),
    rotate_token: bool = typer.Option(False, "--rotate-token", help="replace the API token, then serve"),
    promotion_watch_s: float = typer.Option(
        30.0,
        "--promotion-watch-s",
        min=1.0,
        help="seconds between looks for production moves made in the MLflow UI",
    ),
) -> None:
    """Serve the API and dashboard on 127.0.0.1 (RAYTRADE_API_PORT) until Ctrl-C."""
    from core.errors import ConfigError
    from raytrade.rayinit import start_ray
    from serve.api.auth import ensure_token
    from serve.api.auth import rotate_token as rotate
    from storage import db
    from storage.registry import ModelRegistry

    settings = settings_or_exit()
    engine = db.make_engine(settings.database_url)
    try:
        if not db.is_current(engine):
            console.print(
                "[red]the database is not at the current schema: run `raytrade db upgrade` first[/red]"
            )
            raise typer.Exit(2)
        registry = ModelRegistry(
            settings.tracking_uri, artifact_root=settings.mlflow_artifact_root, engine=engine
        )
        if registry.production_version(model) is None:
            console.print(
                f"[red]model {model!r} has no production version: run `raytrade promote` first[/red]"
            )
            raise typer.Exit(2)
    finally:
        engine.dispose()
    token_file = api_config(settings).token_file
    (rotate if rotate_token else ensure_token)(token_file)
    start_ray(settings, progress=False)
    try:
        url = start_api(settings, model)
    except ConfigError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None
    console.print(f"dashboard: {url}/dashboard  (token in {token_file}; send it as Authorization: Bearer …)")
    console.print(f"API schema: {url}/openapi.json; Ctrl-C stops")
    watcher = start_promotion_watch(settings, promotion_watch_s)
    stop = {"now": False}
    signal.signal(signal.SIGINT, lambda *_: stop.update(now=True))
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    try:
        while not stop["now"]:
            time.sleep(0.5)
    finally:
        watcher.stop()


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)
