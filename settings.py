"""Settings: documented defaults in settings.yaml, overridden by GALLERY_<SECTION>_<KEY> variables.

Every key is a typed dataclass field; loading coerces and validates each value and raises
SettingsError with one line naming the key and what is wrong.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from xmpp import jids

HERE = Path(__file__).resolve().parent


class SettingsError(ValueError):
    """An invalid setting: the message is one line naming the key."""


@dataclass
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = ""  # empty: http://<host>:<port>
    x_accel_redirect: str = ""  # empty: serve files directly
    idle_connection_timeout: int = 60
    body_timeout: int = 300
    max_header_size: int = 16384
    shutdown_grace: int = 30
    metrics_allow: list[str] = field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    xheaders: bool = False  # trust X-Real-IP / X-Forwarded-For / X-Scheme from a reverse proxy
    cors_origins: list[str] = field(default_factory=lambda: ["*"])  # web origins allowed to call the API
    processes: int = 1  # worker processes sharing the listening socket; 0: one per core


@dataclass
class MongoSettings:
    uri: str = ""  # empty: start the embedded evaluation database
    database: str = "gallery"
    timeout: float = 5.0
    embedded_path: str = "data/db"  # the embedded database's files and log (when uri is empty)


@dataclass
class StorageSettings:
    backend: str = "local"  # local: files under path; gridfs: GridFS in the configured MongoDB
    path: str = "data/files"
    gridfs_chunk_size: int = 1048576  # bytes per GridFS chunk (gridfs backend)


@dataclass
class ComponentSettings:
    """The XEP-0114 external component that answers XEP-0363 slot requests (empty jid: off)."""

    jid: str = ""  # e.g. upload.example.org
    secret: str = ""
    host: str = "127.0.0.1"
    port: int = 5347
    domains: list[str] = field(default_factory=list)  # whose users may upload; empty: the parent domain
    permanent: bool = False  # also offer the XEP-0363 `permanent` purpose

    def allowed_domains(self) -> list[str]:
        """`domains`, or the component's parent domain (upload.example.org -> example.org)."""
        if self.domains:
            return self.domains
        return [self.jid.split(".", 1)[1]] if "." in self.jid else []


@dataclass
class XmppSettings:
    jid: str = ""
    password: str = ""
    host: str = ""
    port: int = 0
    require_tls: bool = True
    verify_tls: bool = True
    component: ComponentSettings = field(default_factory=ComponentSettings)


@dataclass
class AuthSettings:
    code_ttl: int = 300
    token_ttl: int = 2592000
    allow_domains: list[str] = field(default_factory=list)
    deny: list[str] = field(default_factory=list)
    code_interval: int = 30
    codes_per_jid_per_hour: int = 10
    codes_per_address_per_hour: int = 30
    attempts_per_address_per_hour: int = 100


@dataclass
class QuotaSettings:
    default: int = 1073741824


@dataclass
class LimitsSettings:
    max_file_size: int = 104857600
    uploads_per_window: int = 10
    upload_window: int = 10
    concurrent_uploads_per_user: int = 4
    concurrent_uploads: int = 64
    slot_ttl: int = 300  # seconds an XEP-0363 upload slot stays valid


@dataclass
class RetentionSettings:
    """How long files are kept, in days per upload purpose (the file's `context`); 0 or empty:
    until deleted. A file expires at the earliest of this and the uploader's own deadline
    (XEP-0363 `<ephemeral expire-before>`, Prosody's `expires` claim)."""

    message: float = 0.0
    ephemeral: float = 0.0
    profile: float = 0.0  # also avatars
    permanent: float = 0.0
    default: float = 0.0  # any other context, or none (REST uploads)
    sweep_interval: float = 30.0  # seconds between two runs of the expiry sweeper
    sweep_batch: int = 200  # expired files removed per database read


@dataclass
class ProsodyShareSettings:
    """Prosody's mod_http_file_share in external mode, pointed at gallery (empty secret: off)."""

    secret: str = ""  # = Prosody's http_file_share_secret
    path: str = "/share"  # URL path prefix that http_file_share_base_url points at


@dataclass
class ImagingSettings:
    workers: int = 0  # 0: one per core
    max_pixels: int = 50_000_000
    timeout: int = 30


@dataclass
class WebSettings:
    title: str = "gallery"  # the page's title and heading
    logo: str = ""  # empty: none; a file path (relative to this directory) or an https:// URL
    code_hint: str = ""  # what the login page says about where codes come from; empty: the default


@dataclass
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    mongodb: MongoSettings = field(default_factory=MongoSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    xmpp: XmppSettings = field(default_factory=XmppSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    quota: QuotaSettings = field(default_factory=QuotaSettings)
    limits: LimitsSettings = field(default_factory=LimitsSettings)
    imaging: ImagingSettings = field(default_factory=ImagingSettings)
    web: WebSettings = field(default_factory=WebSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    prosody_share: ProsodyShareSettings = field(default_factory=ProsodyShareSettings)
    admins: list[str] = field(default_factory=list)

    @property
    def public_url(self) -> str:
        return self.server.public_url or f"http://{self.server.host}:{self.server.port}"

    @property
    def processes(self) -> int:
        """The number of worker processes server.processes asks for (0: one per core)."""
        return self.server.processes or os.cpu_count() or 1

    @property
    def storage_path(self) -> Path:
        return (HERE / self.storage.path).resolve()

    @property
    def embedded_db_path(self) -> Path:
        return (HERE / self.mongodb.embedded_path).resolve()


STORAGE_BACKENDS = ("local", "gridfs")

# The words for true and false, in settings and in request parameters alike.
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def _coerce(key: str, kind: typing.Any, value: typing.Any) -> typing.Any:
    """Turn a YAML or environment value into the field's type, or raise SettingsError."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in TRUE_WORDS:
            return True
        if text in FALSE_WORDS or text == "":
            return False
        raise SettingsError(f"{key}: expected true or false, got {value!r}")
    if kind is float:
        if value is None or str(value).strip() == "":
            return 0.0
        try:
            return float(str(value).strip())
        except ValueError:
            raise SettingsError(f"{key}: expected a number, got {value!r}") from None
    if kind is int:
        if isinstance(value, bool):
            raise SettingsError(f"{key}: expected an integer, got {value!r}")
        try:
            return int(str(value).strip())
        except ValueError:
            raise SettingsError(f"{key}: expected an integer, got {value!r}") from None
    if kind is str:
        if value is None:
            return ""
        if isinstance(value, (dict, list)):
            raise SettingsError(f"{key}: expected a string, got {value!r}")
        return str(value)
    if typing.get_origin(kind) is list:
        if value is None:
            return []
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list):
            raise SettingsError(f"{key}: expected a list, got {value!r}")
        return [str(item).strip() for item in items if str(item).strip()]
    raise SettingsError(f"{key}: unsupported setting type")  # pragma: no cover


def _apply(target: typing.Any, prefix: str, data: dict, env: typing.Mapping[str, str]) -> None:
    hints = typing.get_type_hints(type(target))
    known = {f.name for f in dataclasses.fields(target)}
    for name in data:
        if name not in known:
            raise SettingsError(f"{prefix}{name}: unknown setting")
    for f in dataclasses.fields(target):
        key = f"{prefix}{f.name}"
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            section = data.get(f.name) or {}
            if not isinstance(section, dict):
                raise SettingsError(f"{key}: expected a mapping")
            _apply(getattr(target, f.name), f"{key}.", section, env)
            continue
        env_name = "GALLERY_" + key.replace(".", "_").upper()
        if env_name in env:
            setattr(target, f.name, _coerce(key, kind, env[env_name]))
        elif f.name in data:
            setattr(target, f.name, _coerce(key, kind, data[f.name]))


def _positive(key: str, value: int, minimum: int = 1) -> None:
    if value < minimum:
        raise SettingsError(f"{key}: must be at least {minimum}, got {value}")


def _validate(s: Settings) -> None:
    if not 0 <= s.server.port <= 65535:
        raise SettingsError(f"server.port: must be between 0 and 65535, got {s.server.port}")
    if s.server.public_url:
        parts = urlsplit(s.server.public_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise SettingsError(f"server.public_url: must be an http(s) URL, got {s.server.public_url!r}")
        s.server.public_url = s.server.public_url.rstrip("/")
    for network in s.server.metrics_allow:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise SettingsError(f"server.metrics_allow: {network!r} is not an address or network") from None
    if s.server.x_accel_redirect and not s.server.x_accel_redirect.startswith("/"):
        raise SettingsError("server.x_accel_redirect: must be an nginx location starting with /")
    s.server.x_accel_redirect = s.server.x_accel_redirect.rstrip("/")
    for key, value in (
        ("server.idle_connection_timeout", s.server.idle_connection_timeout),
        ("server.body_timeout", s.server.body_timeout),
        ("server.shutdown_grace", s.server.shutdown_grace),
        ("auth.code_ttl", s.auth.code_ttl),
        ("auth.token_ttl", s.auth.token_ttl),
        ("auth.codes_per_jid_per_hour", s.auth.codes_per_jid_per_hour),
        ("auth.codes_per_address_per_hour", s.auth.codes_per_address_per_hour),
        ("auth.attempts_per_address_per_hour", s.auth.attempts_per_address_per_hour),
        ("limits.max_file_size", s.limits.max_file_size),
        ("limits.uploads_per_window", s.limits.uploads_per_window),
        ("limits.upload_window", s.limits.upload_window),
        ("limits.concurrent_uploads_per_user", s.limits.concurrent_uploads_per_user),
        ("limits.concurrent_uploads", s.limits.concurrent_uploads),
        ("limits.slot_ttl", s.limits.slot_ttl),
        ("imaging.max_pixels", s.imaging.max_pixels),
        ("imaging.timeout", s.imaging.timeout),
    ):
        _positive(key, value)
    _positive("server.max_header_size", s.server.max_header_size, 1024)
    for key, value in (
        ("auth.code_interval", s.auth.code_interval),
        ("quota.default", s.quota.default),
        ("imaging.workers", s.imaging.workers),
        ("server.processes", s.server.processes),
        ("xmpp.port", s.xmpp.port),
        ("xmpp.component.port", s.xmpp.component.port),
    ):
        _positive(key, value, 0)
    if s.mongodb.uri and not s.mongodb.uri.startswith(("mongodb://", "mongodb+srv://")):
        raise SettingsError("mongodb.uri: must start with mongodb:// or mongodb+srv://")
    if not 0 < s.mongodb.timeout <= 300:
        raise SettingsError(f"mongodb.timeout: must be between 0 and 300 seconds, got {s.mongodb.timeout}")
    if not s.mongodb.database or any(c in s.mongodb.database for c in '/\\. "$'):
        raise SettingsError(f"mongodb.database: invalid name {s.mongodb.database!r}")
    if s.storage.backend not in STORAGE_BACKENDS:
        raise SettingsError(f"storage.backend: expected one of {', '.join(STORAGE_BACKENDS)}, got {s.storage.backend!r}")
    if not 1024 <= s.storage.gridfs_chunk_size <= 15 << 20:
        raise SettingsError(
            f"storage.gridfs_chunk_size: must be between 1024 and {15 << 20} bytes, got {s.storage.gridfs_chunk_size}"
        )
    if not s.storage.path:
        raise SettingsError("storage.path: must not be empty")
    if not s.mongodb.embedded_path:
        raise SettingsError("mongodb.embedded_path: must not be empty")
    if bool(s.xmpp.jid) != bool(s.xmpp.password):
        raise SettingsError("xmpp.password: xmpp.jid and xmpp.password go together")
    if s.xmpp.component.jid and not s.xmpp.component.secret:
        raise SettingsError("xmpp.component.secret: required when xmpp.component.jid is set")
    if not s.xmpp.component.port <= 65535:
        raise SettingsError(f"xmpp.component.port: must be between 0 and 65535, got {s.xmpp.component.port}")
    _validate_web(s)
    _validate_retention(s)
    _validate_jids(s)


def _validate_web(s: Settings) -> None:
    if not s.web.title.strip() or len(s.web.title) > 100:
        raise SettingsError("web.title: must be 1 to 100 characters")
    logo = s.web.logo
    if logo.startswith(("http://", "https://")):
        parts = urlsplit(logo)
        if parts.scheme != "https" or not parts.netloc:
            raise SettingsError(f"web.logo: a URL must be https://, got {logo!r}")
    elif logo and not (HERE / logo).is_file():
        raise SettingsError(f"web.logo: no such file {logo!r}")
    if len(s.web.code_hint) > 500:
        raise SettingsError("web.code_hint: at most 500 characters")


def _validate_retention(s: Settings) -> None:
    r = s.retention
    for name in ("message", "ephemeral", "profile", "permanent", "default"):
        days = getattr(r, name)
        if not 0 <= days <= 1_000_000:  # also refuses NaN
            raise SettingsError(f"retention.{name}: days between 0 (keep until deleted) and 1000000, got {days}")
    if not 0.05 <= r.sweep_interval <= 86400:
        raise SettingsError(f"retention.sweep_interval: seconds between 0.05 and 86400, got {r.sweep_interval}")
    _positive("retention.sweep_batch", r.sweep_batch)
    share = s.prosody_share
    if not share.path.startswith("/") or share.path.rstrip("/") in ("", "/api", "/media", "/upload", "/web") or "?" in share.path:
        raise SettingsError(f"prosody_share.path: a URL path of its own such as /share, got {share.path!r}")
    share.path = share.path.rstrip("/")


def _validate_jids(s: Settings) -> None:
    """JID-valued settings, normalised as the service compares them (nodeprep, nameprep)."""
    try:
        if s.xmpp.jid:
            jids.parse(s.xmpp.jid)
    except jids.BadJid as exc:
        raise SettingsError(f"xmpp.jid: {exc}") from None
    component = s.xmpp.component
    if component.jid:
        try:
            component.jid = jids.domain(component.jid)
        except jids.BadJid as exc:
            raise SettingsError(f"xmpp.component.jid: {exc} (a domain such as upload.example.org)") from None
        if not component.allowed_domains():
            raise SettingsError("xmpp.component.domains: required when xmpp.component.jid has no parent domain")
    for key, values, normalise in (
        ("admins", s.admins, jids.bare),
        ("auth.allow_domains", s.auth.allow_domains, jids.domain),
        ("auth.deny", s.auth.deny, jids.entry),
        ("xmpp.component.domains", s.xmpp.component.domains, jids.domain),
    ):
        for i, value in enumerate(values):
            try:
                values[i] = normalise(value)
            except jids.BadJid as exc:
                raise SettingsError(f"{key}: {value!r}: {exc}") from None


def load(path: Path | str | None = None, env: typing.Mapping[str, str] | None = None) -> Settings:
    """Read the YAML file (if it exists), apply environment overrides, validate."""
    env = os.environ if env is None else env
    path = Path(path) if path else HERE / "settings.yaml"
    data: dict = {}
    if path.exists():
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise SettingsError(f"{path}: not valid YAML ({exc.__class__.__name__})") from None
        if not isinstance(data, dict):
            raise SettingsError(f"{path}: expected a mapping of sections")
    settings = Settings()
    _apply(settings, "", data, env)
    _validate(settings)
    return settings
