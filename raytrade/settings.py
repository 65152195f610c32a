"""Settings: ``RAYTRADE_*`` environment variables and ``.env``, validated once at start.

Nested component configs use ``__``: ``RAYTRADE_RISK__MAX_USED_MARGIN_PCT=0.3``.
``load_settings`` turns any validation failure into a ConfigError naming each key and problem, one
line per problem, without the value of any URL or secret (``redact_url``) and with plain numbers.
URLs and folders are checked here, so a malformed one fails at start, not deep in a command.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from actors.health import HealthConfig
from core.config import LabelSpec, PolicyConfig, RiskConfig, WriterConfig, policy_label_conflicts
from core.errors import ConfigError
from core.killswitch import KillSwitchConfig
from core.notify import NotifyConfig
from core.symbols import DEFAULT_UNIVERSE, SymbolError, parse_universe

ENV_PREFIX = "RAYTRADE_"


class Settings(BaseSettings):
    """Every setting of the platform. Paths default under ``data_dir``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="forbid",
        frozen=True,
    )

    data_dir: Path = Field(Path("data"), description="where the embedded defaults keep their files")
    db_url: str | None = Field(
        None, repr=False, description="SQLAlchemy URL; default: SQLite file <data_dir>/raytrade.db"
    )
    redis_url: str | None = Field(
        None, repr=False, description="Redis URL for the event bus; unset: in-process bus"
    )
    mlflow_tracking_uri: str | None = Field(
        None, repr=False, description="MLflow tracking URI; default: <data_dir>/mlflow.db"
    )
    lake_path: Path | None = Field(None, description="parquet data lake root; default: <data_dir>/lake")
    universe: Annotated[tuple[str, ...], NoDecode] = Field(
        DEFAULT_UNIVERSE, description="comma-separated symbols"
    )
    mode: Literal["research", "shadow", "live"] = Field(
        "research", description="what the realtime path may do"
    )
    label: LabelSpec = Field(default_factory=LabelSpec)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    risk: RiskConfig = Field(default_factory=RiskConfig)
    killswitch: KillSwitchConfig = Field(default_factory=KillSwitchConfig)
    writer: WriterConfig = Field(default_factory=WriterConfig)
    notify: NotifyConfig = Field(
        default_factory=NotifyConfig,
        description="Slack/Telegram notifications (RAYTRADE_NOTIFY__SLACK_WEBHOOK_URL, __TELEGRAM_BOT_TOKEN, "
        "__TELEGRAM_CHAT_ID, __EVENTS); off until a channel is set",
    )
    health: HealthConfig = Field(
        default_factory=HealthConfig, description="the health checker of `raytrade run`"
    )
    binance_api_key: SecretStr | None = Field(None, description="Binance API key (live mode only)")
    binance_api_secret: SecretStr | None = Field(None, description="Binance API secret (live mode only)")
    venue_api_key: SecretStr | None = Field(
        None, description="API key of the replay venue's paper broker (`raytrade venue`)"
    )
    venue_api_secret: SecretStr | None = Field(
        None, description="API secret of the replay venue's paper broker (`raytrade venue`)"
    )
    testnet: bool = Field(False, description="use Binance's futures testnet")
    history_base_url: str = Field("https://data.binance.vision", description="public dump server")
    fapi_url: str | None = Field(None, description="REST base URL override (e.g. the replay venue)")
    ray_address: str | None = Field(
        None,
        description="Ray cluster address (head:6379 of `ray start --head --node-ip-address=<ip>`); "
        "unset: start local Ray on loopback only (127.0.0.1)",
    )
    ray_num_cpus: int | None = Field(None, ge=1, description="CPUs for local Ray; unset: all")
    ray_object_store_mb: int = Field(512, ge=64, description="object store of local Ray, MiB")
    predictor_replicas: int = Field(
        1, ge=1, description="replicas of the Serve Predictor, spread evenly over the cluster's nodes"
    )
    api_port: int = Field(8765, ge=1, le=65535, description="the API and dashboard, on 127.0.0.1")
    api_server: Literal["uvicorn-actor", "serve"] = Field(
        "uvicorn-actor",
        description="what serves the API: uvicorn in one Ray actor (serve.api_server; ~1 ms CPU a request) "
        "or a Serve deployment behind Serve's HTTP proxy (serve.ingress; ~8-13 ms CPU a request)",
    )
    worker_lease_s: float = Field(
        60.0, gt=0, le=86_400, description="how long a batch worker holds a job without a heartbeat, s"
    )
    worker_max_attempts: int = Field(
        3, ge=1, le=100, description="claims of a job whose worker died before it is failed"
    )
    drift_every_s: float = Field(
        3600.0,
        ge=0,
        le=7 * 86_400,
        description="batch workers queue one drift job per this period, s (one across all workers); 0: never",
    )

    @field_validator("universe", mode="before")
    @classmethod
    def _parse_universe(cls, value: Any) -> tuple[str, ...]:
        if isinstance(value, (str, list, tuple)):
            try:
                return parse_universe(value)
            except SymbolError as e:
                raise ValueError(str(e)) from None
        raise ValueError(f"expected comma-separated symbols, got {type(value).__name__}")

    @field_validator("db_url", "redis_url", "mlflow_tracking_uri", "fapi_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and value.strip() == "" else value

    @field_validator("db_url")
    @classmethod
    def _known_database(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not value.startswith(("sqlite", "postgresql")):
            raise ValueError(
                f"unsupported database URL scheme in {value.split(':', 1)[0]!r}; use sqlite:// or postgresql://"
            )
        try:
            url = make_url(value)
        except (ArgumentError, ValueError):
            raise ValueError(
                "malformed database URL; expected e.g. sqlite:///data/raytrade.db or "
                "postgresql://host:5432/raytrade (user and password before the host)"
            ) from None
        if url.get_backend_name() == "postgresql" and not url.database:
            raise ValueError("the PostgreSQL URL names no database (postgresql://…/<database>)")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        if value is not None and not value.startswith("unix://"):
            _check_port(value)
        return value

    @field_validator("mlflow_tracking_uri", "fapi_url")
    @classmethod
    def _url_port(cls, value: str | None) -> str | None:
        if value is not None and "://" in value and not value.startswith(("sqlite", "file")):
            _check_port(value)
        return value

    @field_validator("data_dir", "lake_path")
    @classmethod
    def _a_folder(cls, value: Path | None) -> Path | None:
        if value is None:
            return value
        existing = next((p for p in (value, *value.parents) if p.exists()), None)
        if existing is not None and not existing.is_dir():
            raise ValueError(f"{existing} is a file, not a folder")
        return value

    @model_validator(mode="after")
    def _policy_fits_labels(self) -> Settings:
        conflicts = policy_label_conflicts(self.policy, self.label)
        if conflicts:
            raise ValueError("; ".join(conflicts))
        return self

    @model_validator(mode="after")
    def _live_needs_keys(self) -> Settings:
        if self.mode == "live":
            missing = [
                f"{ENV_PREFIX}{name.upper()}"
                for name in ("binance_api_key", "binance_api_secret")
                if getattr(self, name) is None or not getattr(self, name).get_secret_value()
            ]
            if missing:
                raise ValueError(f"mode=live needs {', '.join(missing)}")
        return self

    # Resolved locations -------------------------------------------------------------------------
    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{(self.data_dir / 'raytrade.db').resolve()}"

    @property
    def lake_root(self) -> Path:
        return (self.lake_path or self.data_dir / "lake").resolve()

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{(self.data_dir / 'mlflow.db').resolve()}"

    @property
    def mlflow_artifact_root(self) -> Path:
        return (self.data_dir / "mlartifacts").resolve()

    def redacted(self) -> dict[str, Any]:
        """Return the settings as a dict with secrets masked, for display and logs."""
        out = self.model_dump(mode="json")
        for name, value in self:
            if isinstance(value, SecretStr):
                out[name] = "**********"
        out["db_url"] = redact_url(self.database_url)
        out["mlflow_tracking_uri"] = redact_url(self.tracking_uri)
        for name in _URL_FIELDS:
            if isinstance(out.get(name), str):
                out[name] = redact_url(out[name])
        return out


_URL_FIELDS = ("db_url", "redis_url", "mlflow_tracking_uri", "fapi_url", "history_base_url", "ray_address")
_SECRET_PARAM = re.compile(
    r"(?P<key>[\w-]*(?:password|passwd|secret|token|api[_-]?key|signature)[\w-]*=)[^&\s]+", re.IGNORECASE
)


def _check_port(url: str) -> None:
    from urllib.parse import urlsplit

    try:
        port = urlsplit(url).port
    except ValueError:
        port = -1
    if port == -1 or port == 0:
        raise ValueError("malformed URL: the port must be a number from 1 to 65535")


def redact_url(url: str) -> str:
    """Mask the password of a URL (``postgresql://user:***@host/db``) and secret query parameters."""
    url = _SECRET_PARAM.sub(r"\g<key>***", url)
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url


def _env_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if not (isinstance(p, str) and p.startswith("function-"))]
    if not parts:
        return ENV_PREFIX + "*"
    name = "__".join(p.upper() for p in parts)
    # An unknown key read from .env arrives with its prefix still on (``raytrade_typo``).
    return name if name.startswith(ENV_PREFIX) else ENV_PREFIX + name


_NUMPY_SCALAR = re.compile(r"np\.(?:float|int|uint|bool_)\w*\(([^()]*)\)")
_DOTTED_FIELD = re.compile(r"\b([a-z_]+)\.([a-z0-9_]+)\b")


def _plain(text: str) -> str:
    return _NUMPY_SCALAR.sub(r"\1", text)


def _named_keys(loc: tuple[Any, ...], msg: str) -> list[str]:
    """Keys a model-level problem is about: the fields its message names (``risk_mae_atr``, ``label.k_sl``)."""
    keys: list[str] = []
    if len(loc) == 1 and isinstance(loc[0], str):  # a nested model's own check: its fields, by name
        model = getattr(Settings.model_fields.get(loc[0]), "annotation", None)
        if isinstance(model, type) and issubclass(model, BaseModel):
            found = [(m.start(), f) for f in model.model_fields for m in [re.search(rf"\b{f}\b", msg)] if m]
            keys = [_env_name((loc[0], f)) for _, f in sorted(found)]
    elif not loc:  # a check across models: ``policy.q05_min_atr`` names RAYTRADE_POLICY__Q05_MIN_ATR
        for section, name in _DOTTED_FIELD.findall(msg):
            model = getattr(Settings.model_fields.get(section), "annotation", None)
            if isinstance(model, type) and issubclass(model, BaseModel) and name in model.model_fields:
                keys.append(_env_name((section, name)))
    return list(dict.fromkeys(keys))


def _shown_value(loc: tuple[Any, ...], value: Any) -> str:
    if isinstance(value, (dict, SecretStr)) or value is None:
        return ""
    field = str(loc[0]) if loc else ""
    if field in _URL_FIELDS or re.search(r"key|secret|password|token", field):
        return ""  # a URL or a secret is never echoed: it may carry a password
    return f" (got {_plain(repr(value))})"


def format_validation_error(err: ValidationError) -> str:
    """Return one line per problem: the environment key(s), the message and the rejected value.

    URLs and secrets are never shown; numpy scalars show as plain numbers.
    """
    lines = []
    for e in err.errors():
        loc = tuple(p for p in e.get("loc", ()) if not (isinstance(p, str) and p.startswith("function-")))
        msg = _plain(redact_url(e.get("msg", "invalid").removeprefix("Value error, ")))
        keys = _named_keys(loc, msg) or [_env_name(loc)]
        shown = _shown_value(loc, e.get("input"))
        if e.get("type") == "extra_forbidden":
            msg, shown = "unknown setting", ""
        lines.append(f"{', '.join(keys)}: {msg}{shown}")
    return "\n".join(lines)


#: Prefixes of variables that are ours but not settings (test and benchmark service URLs, and the
#: passphrase of the encrypted keys, read by raytrade.keystore only and never kept in Settings).
_NOT_SETTINGS = (f"{ENV_PREFIX}TEST_", f"{ENV_PREFIX}BENCH_", f"{ENV_PREFIX}KEYS_PASSPHRASE")


def unknown_env_keys(environ: Mapping[str, str]) -> list[str]:
    """Return ``RAYTRADE_*`` variables that name no setting (a typo would otherwise be ignored silently)."""
    unknown = []
    for key in environ:
        if not key.startswith(ENV_PREFIX) or key.startswith(_NOT_SETTINGS):
            continue
        name, _, nested = key[len(ENV_PREFIX) :].lower().partition("__")
        field = Settings.model_fields.get(name)
        if field is None:
            unknown.append(key)
            continue
        model = field.annotation
        if nested and not (
            isinstance(model, type) and issubclass(model, BaseModel) and nested in model.model_fields
        ):
            unknown.append(key)
    return unknown


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build Settings from the environment, ``.env`` and ``overrides``; raise ConfigError naming bad keys."""
    unknown = unknown_env_keys(os.environ if environ is None else environ)
    problems = [f"{key}: unknown setting" for key in unknown]
    try:
        settings = Settings(**overrides)
    except ValidationError as e:
        problems += [line for line in format_validation_error(e).splitlines() if line not in problems]
        settings = None
    if problems or settings is None:
        sep = "\n" if len(problems) > 1 else " "
        raise ConfigError("invalid settings:" + sep + "\n".join(problems))
    return settings
