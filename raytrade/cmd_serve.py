"""``raytrade serve``: the API and the dashboard on local Ray, on 127.0.0.1: uvicorn in one Ray actor
(``serve.api_server``, the default) or Serve's HTTP proxy (``serve.ingress``), by ``Settings.api_server``."""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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


@dataclass
class RunningApi:
    """A started API: its base URL and how to stop it."""

    url: str
    server: str  # Settings.api_server
    actor: Any = None  # the uvicorn actor (serve.api_server); None behind Serve's proxy

    def stop(self) -> None:
        """Stop serving: the uvicorn actor stops gracefully and frees the port; the Serve app is deleted."""
        if self.actor is not None:
            from serve.api_server import stop_api_server

            stop_api_server(self.actor)
            self.actor = None
        elif self.server == "serve":
            from ray import serve

            from serve.ingress import API_APP_NAME

            serve.delete(API_APP_NAME)
            self.server = "stopped"


def prepare_api(settings: Settings) -> None:
    """Call before anything deploys on Serve: behind Serve's proxy, Serve must start with HTTP on
    (its HTTP options are fixed at its first start); the uvicorn actor needs nothing of Serve's HTTP."""
    if settings.api_server == "serve":
        from serve.ingress import start_serve

        start_serve(settings.api_port)


def launch_api(settings: Settings) -> RunningApi:
    """Serve the API on 127.0.0.1:``api_port`` with ``settings.api_server`` (the Predictor is running)."""
    if settings.api_server == "serve":
        from serve.ingress import deploy_api

        return RunningApi(deploy_api(api_config(settings), settings.api_port), "serve")
    from serve.api_server import start_api_server

    actor, url = start_api_server(api_config(settings), settings.api_port)
    return RunningApi(url, settings.api_server, actor)


def start_api(settings: Settings, model: str) -> RunningApi:
    """The Predictor of ``model``'s production version and the API on 127.0.0.1:``api_port``
    (``settings.api_server``: uvicorn in a Ray actor, or Serve's HTTP proxy); ``.url`` is its address."""
    from serve.predictor import deploy_predictor

    prepare_api(settings)
    deploy_predictor(settings.tracking_uri, model, num_replicas=settings.predictor_replicas)
    return launch_api(settings)


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
    stop = {"now": False}
    signal.signal(signal.SIGINT, lambda *_: stop.update(now=True))
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))  # before Ray: kept through ray.init
    start_ray(settings, progress=False)
    try:
        api = start_api(settings, model)
    except (ConfigError, OSError) as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None
    url = api.url
    console.print(f"dashboard: {url}/dashboard  (token in {token_file}; send it as Authorization: Bearer …)")
    console.print(f"API schema: {url}/openapi.json; Ctrl-C stops")
    watcher = start_promotion_watch(settings, promotion_watch_s)
    try:
        while not stop["now"]:
            time.sleep(0.5)
    finally:
        watcher.stop()
        api.stop()


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)
