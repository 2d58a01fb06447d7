"""Configuration: the TOML file of the contract, environment overrides, built-in demo defaults.

Settings are parsed once, here, into frozen pydantic models and passed down; nothing
below the CLI reads ``os.environ``. ``load_settings`` is the only entry point:

* ``--config FILE``, else the file named by ``SMSGW_CONFIG``, else the built-in demo
  (``DEMO_TOML``, spelled out in ``config/demo.toml``);
* then ``SMSGW_<SECTION>__<KEY>=value`` overrides on top, the value parsed as a TOML
  value when it is one (``true``, ``50``, ``0.5``) and taken as a string otherwise.
  Array entries are addressed by index: ``SMSGW_UPSTREAMS__0__WINDOW=20``.

Every problem raises ``ConfigError`` whose message names the key path, for example
``upstreams[0].window: Input should be greater than 0``; unknown keys are errors.
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

__all__ = [
    "DEMO_TOML",
    "AccountSettings",
    "ConfigError",
    "DatabaseSettings",
    "DispatchSettings",
    "HttpSettings",
    "MqttSettings",
    "Settings",
    "SimulatorSettings",
    "SmppSettings",
    "UpstreamSettings",
    "WebhookSettings",
    "demo_settings",
    "load_settings",
    "parse_listen",
]

ENV_PREFIX = "SMSGW_"
CONFIG_ENV = "SMSGW_CONFIG"


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key and the problem."""


def parse_listen(value: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[::1]:2775`` for IPv6) into host and port; port 0 = any free port."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError(f"unbalanced brackets in {value!r}")
        host = host[1:-1]
        ipaddress.IPv6Address(host)  # raises ValueError with its own explanation
    elif ":" in host:
        raise ValueError(f"an IPv6 host must be in brackets: {value!r}")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"port must be a number from 0 to 65535, got {port_text!r}")
    return host, int(port_text)


def _check_listen(value: str) -> str:
    parse_listen(value)
    return value


Listen = Annotated[str, AfterValidator(_check_listen)]


class _Section(BaseModel):
    # coerce_numbers_to_str: SMSGW_ACCOUNTS__0__PASSWORD=1234 parses as a TOML integer.
    model_config = ConfigDict(frozen=True, extra="forbid", coerce_numbers_to_str=True)


class DatabaseSettings(_Section):
    url: str = "sqlite+aiosqlite:///smsgw.db"
    auto_migrate: bool = True
    # Group commit: writes queued within this window go into one transaction.
    commit_window_ms: float = Field(default=2.0, ge=0, le=1000)
    commit_max_batch: int = Field(default=1000, gt=0, le=100_000)
    # Where the group commit's transactions run: a process of their own (the
    # event loop keeps its GIL to itself) or a thread of the gateway's.
    writer: Literal["process", "thread"] = "process"

    @field_validator("url")
    @classmethod
    def _async_driver(cls, url: str) -> str:
        # Accept the plain spellings users copy from elsewhere and pick the async driver.
        scheme, sep, rest = url.partition("://")
        if not sep:
            raise ValueError(f"not a database URL: {url!r}")
        if scheme in ("sqlite", "sqlite+aiosqlite"):
            return f"sqlite+aiosqlite://{rest}"
        if scheme in ("postgres", "postgresql", "postgresql+asyncpg"):
            return f"postgresql+asyncpg://{rest}"
        raise ValueError(
            f"unsupported database {scheme!r}: use sqlite+aiosqlite:// or postgresql+asyncpg://"
        )


class HttpSettings(_Section):
    listen: Listen = "127.0.0.1:8080"


class SmppSettings(_Section):
    listen: Listen = "127.0.0.1:2775"
    tls_listen: Listen | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    # How long a receipt waits for a receiver bind of its account before it is dropped.
    receipt_ttl_s: int = Field(default=72 * 3600, gt=0)

    @model_validator(mode="after")
    def _tls_complete(self) -> Self:
        if self.tls_listen is not None and (self.tls_cert is None or self.tls_key is None):
            raise ValueError("tls_listen needs both tls_cert and tls_key")
        return self


class MqttSettings(_Section):
    url: str = "mqtt://127.0.0.1:1883"
    topic_prefix: str = Field(default="smsgw", min_length=1)

    @field_validator("url")
    @classmethod
    def _mqtt_scheme(cls, url: str) -> str:
        if not url.startswith(("mqtt://", "mqtts://")):
            raise ValueError(f"expected mqtt://HOST:PORT or mqtts://HOST:PORT, got {url!r}")
        return url


Routing = Literal["cheapest", "best_delivery", "balanced"]


class AccountSettings(_Section):
    """An account created (or updated) at startup, the same as ``smsgw account add``."""

    system_id: str = Field(min_length=1, max_length=16)  # SMPP 3.4 section 4.1.1: C-Octet 16
    password: str = Field(min_length=1, max_length=64)  # stored hashed; SMPP caps binds at 8
    api_key: str | None = Field(default=None, min_length=8)
    tps: int = Field(default=100, gt=0)
    routing: Routing = "balanced"
    default_source: str | None = None
    callback_url: str | None = None
    max_price: float | None = Field(default=None, ge=0)
    # Addresses (numbers, short codes, sender names) whose inbound messages (MO)
    # belong to this account; its default_source counts too. MO goes to MQTT.
    mo_addresses: tuple[str, ...] = ()


class SimulatorSettings(_Section):
    """Behaviour of an in-process simulated upstream (``kind = "simulator"``)."""

    delivery_ratio: float = Field(default=1.0, ge=0, le=1)
    dlr_delay_ms: int = Field(default=100, ge=0)
    intermediate: bool = True
    max_tps: int = Field(default=0, ge=0)  # 0 = no limit


class UpstreamSettings(_Section):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    kind: Literal["smpp", "simulator"] = "smpp"
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)  # required for kind = "smpp"
    system_id: str = Field(default="", max_length=16)
    password: str = Field(default="", max_length=9)  # SMPP 3.4 section 4.1.1: C-Octet 9
    system_type: str = Field(default="", max_length=13)
    bind: Literal["transmitter", "transceiver"] = "transceiver"
    window: int = Field(default=50, gt=0, le=10_000)  # per session
    tps: int = Field(default=500, gt=0)  # for the upstream, shared by its sessions
    # Binds to keep to this upstream (Kannel's and Jasmin's "connections"): more
    # submit_sm and receipts in flight than one session's window allows.
    sessions: int = Field(default=1, ge=1, le=16)
    prices: dict[str, float] = Field(default_factory=lambda: {"default": 0.0})
    prices_file: str | None = None
    # Ask this upstream for intermediate notifications (registered_delivery
    # 0x10) besides final receipts: an ENROUTE from the carrier sets
    # handed_to_carrier_at early, at the price of twice the receipt traffic.
    intermediate_receipts: bool = False
    # Rules for the route selector: destinations (E.164 prefixes) this upstream
    # may carry (empty: all) or must not; whether it carries alphanumeric senders.
    allowed_prefixes: tuple[str, ...] = ()
    excluded_prefixes: tuple[str, ...] = ()
    alphanumeric_senders: bool = True
    simulator: SimulatorSettings | None = None

    @field_validator("prices")
    @classmethod
    def _price_keys(cls, prices: dict[str, float]) -> dict[str, float]:
        for prefix, price in prices.items():
            if prefix != "default" and not prefix.isdigit():
                raise ValueError(f"price prefix must be digits or 'default', got {prefix!r}")
            if price < 0:
                raise ValueError(f"price for {prefix!r} must not be negative")
        return prices

    @model_validator(mode="after")
    def _kind_complete(self) -> Self:
        for prefix in (*self.allowed_prefixes, *self.excluded_prefixes):
            if not prefix.lstrip("+").isdigit():
                raise ValueError(f"a prefix is digits (E.164 without '+'), got {prefix!r}")
        # No "default" price is allowed: the route then serves only the
        # destinations it has a price for (routing issue).
        if self.kind == "smpp":
            if self.port == 0:
                raise ValueError("port is required for kind = 'smpp'")
            if not self.system_id:
                raise ValueError("system_id is required for kind = 'smpp'")
            if self.simulator is not None:
                raise ValueError("[simulator] settings need kind = 'simulator'")
        return self


class DispatchSettings(_Section):
    max_queue: int = Field(
        default=100_000, gt=0
    )  # accepted, not submitted: beyond it RMSGQFUL / 503
    poll_interval_ms: int = Field(default=200, gt=0)  # how often scheduled messages are looked for
    submit_timeout_s: float = Field(default=10.0, gt=0)  # submit_sm without submit_sm_resp
    max_attempts: int = Field(default=10, gt=0)  # temporary errors before a message fails
    retry_backoff_ms: int = Field(default=500, ge=0)  # first retry delay, doubled per attempt


class RoutingSettings(_Section):
    """The route selector (routing/): exploration, learning, breaker, failover."""

    # Share of `balanced` selections that may try another route than the best
    # scored one, so a cheap new route can prove itself. 5% at most by default.
    explore_share: float = Field(default=0.05, ge=0, le=0.5)
    latency_penalty_per_s: float = Field(default=0.0001, ge=0)  # money per second to receipt
    quality_half_life_s: float = Field(default=3600.0, gt=0)  # how fast outcomes are forgotten
    breaker_failures: int = Field(default=5, gt=0)  # consecutive failures that open the circuit
    breaker_cooldown_s: float = Field(default=10.0, gt=0)  # before the half-open probe
    # Candidates a message tries, in the selector's order, before it backs off
    # and is routed anew (temporary errors and timeouts move on; a permanent
    # error stops).
    max_attempts: int = Field(default=3, gt=0)


class AdminSettings(_Section):
    # Bearer key of GET /v1/routes, POST /v1/routes/reload and `smsgw route list`.
    # None: the admin endpoints answer 404.
    api_key: str | None = Field(default=None, min_length=8)


class WebhookSettings(_Section):
    timeout_s: float = Field(default=10.0, gt=0)
    max_age_s: int = Field(default=24 * 3600, gt=0)  # retried with backoff for this long
    initial_backoff_s: float = Field(default=1.0, gt=0)
    max_backoff_s: float = Field(default=3600.0, gt=0)
    concurrency: int = Field(default=16, gt=0)


class Settings(_Section):
    """The whole configuration. Omitted sections take their defaults; omitted
    ``accounts`` / ``upstreams`` are empty (only the built-in demo has some)."""

    database: DatabaseSettings = DatabaseSettings()
    http: HttpSettings = HttpSettings()
    smpp: SmppSettings = SmppSettings()
    mqtt: MqttSettings | None = None
    dispatch: DispatchSettings = DispatchSettings()
    routing: RoutingSettings = RoutingSettings()
    admin: AdminSettings = AdminSettings()
    webhooks: WebhookSettings = WebhookSettings()
    accounts: tuple[AccountSettings, ...] = ()
    upstreams: tuple[UpstreamSettings, ...] = ()

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        for what, names in (
            ("accounts", [a.system_id for a in self.accounts]),
            ("upstreams", [u.name for u in self.upstreams]),
        ):
            seen: set[str] = set()
            for name in names:
                if name in seen:
                    raise ValueError(f"{what}: {name!r} appears twice")
                seen.add(name)
        return self


# The built-in defaults ARE the demo. config/demo.toml is this text (a test checks it).
DEMO_TOML = """\
# smsgw demo: the built-in defaults, spelled out. `smsgw serve` without --config runs this.

[database]
url = "sqlite+aiosqlite:///smsgw.db"
auto_migrate = true
commit_window_ms = 2.0
commit_max_batch = 1000
writer = "process"

[http]
listen = "127.0.0.1:8080"

[smpp]
listen = "127.0.0.1:2775"
receipt_ttl_s = 259200

[dispatch]
max_queue = 100000
poll_interval_ms = 200
submit_timeout_s = 10.0
max_attempts = 10
retry_backoff_ms = 500

[routing]
explore_share = 0.05
latency_penalty_per_s = 0.0001
quality_half_life_s = 3600.0
breaker_failures = 5
breaker_cooldown_s = 10.0
max_attempts = 3

[admin]
api_key = "demo-admin-key"

[webhooks]
timeout_s = 10.0
max_age_s = 86400
initial_backoff_s = 1.0
max_backoff_s = 3600.0
concurrency = 16

[[accounts]]
system_id = "demo"
password = "demo-pw"
api_key = "demo-api-key"
tps = 100
routing = "balanced"

[[upstreams]]
name = "sim"
kind = "simulator"
window = 50
tps = 1000
prices = { "default" = 0.01 }

[upstreams.simulator]
delivery_ratio = 1.0
dlr_delay_ms = 100
intermediate = true
max_tps = 0
"""


def _format_loc(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path or "(top level)"


def _validation_message(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        loc = tuple(item["loc"])
        msg = item["msg"]
        if item["type"] == "extra_forbidden":
            msg = "unknown key"
        elif msg.startswith("Value error, "):
            msg = msg.removeprefix("Value error, ")
        lines.append(f"{_format_loc(loc)}: {msg}")
    return "\n".join(lines)


def _parse_env_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _apply_override(raw: dict[str, Any], keys: list[str], value: Any, env_name: str) -> None:
    node: Any = raw
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise ConfigError(f"{env_name}: no entry {key} in {'.'.join(keys[:depth])}")
            if last:
                node[int(key)] = value
            else:
                node = node[int(key)]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"{env_name}: {'.'.join(keys[:depth])} is not a table")
        if last:
            node[key] = value
        else:
            node = node.setdefault(key, {})


def _apply_environ(raw: dict[str, Any], environ: Mapping[str, str]) -> None:
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        keys = [k.lower() for k in name[len(ENV_PREFIX) :].split("__")]
        if len(keys) < 2 or not all(keys):
            raise ConfigError(f"{name}: expected {ENV_PREFIX}<SECTION>__<KEY>")
        _apply_override(raw, keys, _parse_env_value(environ[name]), name)


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def parse_settings(raw: Mapping[str, Any], source: str = "configuration") -> Settings:
    """Validate an already-parsed TOML document."""
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"invalid {source}:\n{_validation_message(exc)}") from None


def demo_settings() -> Settings:
    """The built-in defaults (the demo), without any environment override."""
    return parse_settings(tomllib.loads(DEMO_TOML), "built-in defaults")


def load_settings(path: str | None, environ: Mapping[str, str]) -> Settings:
    """Load the configuration: ``path``, else ``environ["SMSGW_CONFIG"]``, else the demo;
    then apply ``SMSGW_<SECTION>__<KEY>`` overrides from ``environ``."""
    path = path or environ.get(CONFIG_ENV) or None
    if path is None:
        raw = tomllib.loads(DEMO_TOML)
        source = "built-in defaults"
    else:
        raw = _read_toml(path)
        source = f"configuration in {Path(path)}"
    _apply_environ(raw, environ)
    return parse_settings(raw, source)
