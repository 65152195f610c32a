"""The API as a Ray Serve ingress: the FastAPI app (``serve.api``) with its WebSocket, ``/predict`` and
dashboard routers, run as a Serve deployment behind Serve's HTTP proxy on loopback
(``Settings.api_server="serve"``; the default serves the same ``build_api`` app with uvicorn in one
Ray actor, ``serve.api_server``, at about a tenth of the CPU per request).

``start_serve(http_port)`` starts Serve once per cluster: with the proxy on ``127.0.0.1:http_port`` or
with none (handles only — what the Predictor alone needs). Serve's cluster-wide options are fixed at
its first start, so a process that wants HTTP starts Serve before anything else deploys.
``deploy_api(config, http_port)`` runs the app (application ``raytrade-api``, route prefix ``/``);
its replica builds the app itself (``build_api``), so nothing unpicklable crosses to it, and reaches
the Predictor through its deployment handle. Requests to ``/predict`` go through that handle, whose
``@serve.batch`` batches them with the realtime path's.
"""

from __future__ import annotations

from fastapi import FastAPI
from ray import serve
from ray.serve.schema import LoggingConfig

from serve.api.app import ApiConfig, create_app

API_APP_NAME = "raytrade-api"


def start_serve(http_port: int | None) -> None:
    """Start Serve on this Ray cluster (a no-op when it runs already: its first options stay)."""
    if http_port is None:
        serve.start(proxy_location="Disabled", http_options={"host": "127.0.0.1"})
    else:
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": int(http_port)})


def build_api(config: ApiConfig) -> FastAPI:
    """The whole API app: REST routes, the WebSocket channels, ``/predict`` and the dashboard pages."""
    from fastapi import Depends

    from serve.api.auth import read_token, require_token
    from serve.api.pages import pages_router
    from serve.api.predict import predict_router, predictor_call
    from serve.api.routes_explain import explain_router, predictor_explain_call
    from serve.api.ws import ws_router
    from serve.predictor import predictor_handle

    def token_ok(token: str) -> bool:
        import hmac

        try:
            expected = read_token(config.token_file)
        except FileNotFoundError:
            return False
        return bool(expected) and hmac.compare_digest(token.encode(), expected.encode())

    routers = [
        ws_router(
            config.redis_url, token_ok
        ),  # authenticates itself (a bearer check would break the upgrade)
        predict_router(predictor_call(predictor_handle()), dependencies=[Depends(require_token)]),
        explain_router(predictor_explain_call(predictor_handle()), dependencies=[Depends(require_token)]),
        pages_router(),
    ]
    return create_app(config, routers=routers)


def deploy_api(config: ApiConfig, http_port: int) -> str:
    """Run the API behind Serve's proxy on ``127.0.0.1:http_port``; return its base URL."""
    start_serve(http_port)

    def builder() -> (
        FastAPI
    ):  # a plain function: Serve calls it on the replica (a partial would be taken for an ASGI app)
        return build_api(config)

    ingress = serve.ingress(builder)
    # no per-request access log: at hundreds of requests a second its formatting and writing cost the
    # replica and the proxy CPU the state endpoints need (bench/api.py)
    deployment = serve.deployment(
        name="Api", num_replicas=1, ray_actor_options={"num_cpus": 0},
        # every open dashboard WebSocket holds one request slot for its lifetime: Serve's default of 5
        # hung every request once five pages had been opened
        max_ongoing_requests=256, logging_config=LoggingConfig(enable_access_log=False),
    )(ingress())  # fmt: skip
    serve.run(deployment.bind(), name=API_APP_NAME, route_prefix="/")
    return f"http://127.0.0.1:{int(http_port)}"
