"""The REST API: a FastAPI app factory (``create_app``) that the Serve ingress and the other routers plug into."""

from serve.api.app import ApiConfig, create_app
from serve.api.auth import ensure_token, require_token, rotate_token

__all__ = ["ApiConfig", "create_app", "ensure_token", "require_token", "rotate_token"]
