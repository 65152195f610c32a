"""Settings: ``RAYTRADE_*`` environment variables and ``.env``, validated once at start.

Nested component configs use ``__``: ``RAYTRADE_RISK__MAX_USED_MARGIN_PCT=0.3``.
``load_settings`` turns any validation failure into a ConfigError naming each key and problem.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core.config import LabelSpec, PolicyConfig, RiskConfig, WriterConfig, policy_label_conflicts
from core.errors import ConfigError
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
    writer: WriterConfig = Field(default_factory=WriterConfig)
    binance_api_key: SecretStr | None = Field(None, description="Binance API key (live mode only)")
    binance_api_secret: SecretStr | None = Field(None, description="Binance API secret (live mode only)")
    testnet: bool = Field(False, description="use Binance's futures testnet")
    history_base_url: str = Field("https://data.binance.vision", description="public dump server")
    fapi_url: str | None = Field(None, description="REST base URL override (e.g. the replay venue)")
    ray_address: str | None = Field(None, description="Ray cluster address; unset: start local Ray")
    ray_num_cpus: int | None = Field(None, ge=1, description="CPUs for local Ray; unset: all")
    ray_object_store_mb: int = Field(512, ge=64, description="object store of local Ray, MiB")

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
        if value is not None and not value.startswith(("sqlite", "postgresql")):
            raise ValueError(
                f"unsupported database URL scheme in {value.split(':', 1)[0]!r}; use sqlite:// or postgresql://"
            )
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
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
        for name in ("binance_api_key", "binance_api_secret"):
            if out.get(name):
                out[name] = "**********"
        out["db_url"] = redact_url(self.database_url)
        if self.redis_url:
            out["redis_url"] = redact_url(self.redis_url)
        return out


def redact_url(url: str) -> str:
    """Mask the password of a URL (``postgresql://user:***@host/db``)."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url


def _env_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if not (isinstance(p, str) and p.startswith("function-"))]
    return ENV_PREFIX + "__".join(p.upper() for p in parts) if parts else ENV_PREFIX + "*"


def format_validation_error(err: ValidationError) -> str:
    """Return one line per problem: the environment key, the message and the rejected value."""
    lines = []
    for e in err.errors():
        key = _env_name(tuple(e.get("loc", ())))
        msg = e.get("msg", "invalid").removeprefix("Value error, ")
        value = e.get("input")
        shown = "" if isinstance(value, dict) or "SecretStr" in type(value).__name__ else f" (got {value!r})"
        if e.get("type") == "extra_forbidden":
            msg, shown = "unknown setting", ""
        lines.append(f"{key}: {msg}{shown}")
    return "\n".join(lines)


#: Prefixes of variables that are ours but not settings (test and benchmark service URLs).
_NOT_SETTINGS = (f"{ENV_PREFIX}TEST_", f"{ENV_PREFIX}BENCH_")


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
        raise ConfigError("invalid settings:\n" + "\n".join(problems))
    return settings
