"""Token auth of the API: one bearer token kept in a file readable by its owner only (mode 0600).

``ensure_token`` creates the file with a random token at first start; ``rotate_token`` replaces it,
and the running app accepts the new token from the next request on (the file is read per request,
a few microseconds). ``require_token`` is the FastAPI dependency every router but health uses.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

__all__ = ["bearer", "ensure_token", "read_token", "require_token", "rotate_token"]

TOKEN_BYTES = 32
bearer = HTTPBearer(auto_error=False, description="the token of the API's token file")


def _write(path: Path, token: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.chmod(tmp, 0o600)  # an existing tmp file keeps its mode through O_CREAT
    tmp.replace(path)  # the file appears whole: a request never reads half a token


def read_token(path: Path) -> str:
    """Return the token stored in ``path`` (FileNotFoundError when there is none)."""
    return path.read_text().strip()


def ensure_token(path: Path) -> str:
    """Return the token in ``path``, creating the file (mode 0600, random token) when it is missing or empty."""
    try:
        token = read_token(path)
    except FileNotFoundError:
        token = ""
    if not token:
        token = secrets.token_urlsafe(TOKEN_BYTES)
        _write(path, token)
    return token


def rotate_token(path: Path) -> str:
    """Replace the token in ``path`` by a new random one (mode 0600); return it. The old one stops working."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    _write(path, token)
    return token


def require_token(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)
) -> None:
    """Refuse (401) a request without ``Authorization: Bearer <token>`` naming the current token."""
    path: Path = request.app.state.token_file
    try:
        expected = read_token(path)
    except FileNotFoundError:
        expected = ""
    given = "" if credentials is None or credentials.scheme.lower() != "bearer" else credentials.credentials
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="missing or wrong token: send Authorization: Bearer <token from the token file>",
            headers={"WWW-Authenticate": "Bearer"},
        )
