"""TLS and read-route credentials, in the file format of Prometheus's exporter-toolkit.

The same ``web.yml`` an operator writes for node_exporter works here: ``tls_server_config``
(``cert_file``, ``key_file``, optional ``client_ca_file`` with ``client_auth_type``, ``min_version``)
and ``basic_auth_users`` (user → bcrypt hash). mlmon adds a bearer token for read routes
(``server.read_token_env``) because Prometheus's ``authorization`` scrape option sends one.
Keys of the toolkit that mlmon does not implement (``http_server_config``, cipher lists) are refused
by name, so a file never silently means less than it says.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_TLS_KEYS = {"cert_file", "key_file", "client_ca_file", "client_auth_type", "min_version"}
_CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "RequestClientCert": ssl.CERT_OPTIONAL,
                "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL, "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
                "RequireAnyClientCert": ssl.CERT_REQUIRED}
_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}


class WebConfigError(ValueError):
    """The web config file is unreadable or holds a key mlmon cannot honour; one problem per line."""


@dataclass(frozen=True)
class TLSConfig:
    cert_file: str
    key_file: str
    client_ca_file: str | None = None
    client_auth_type: str = "NoClientCert"
    min_version: str = "TLS12"

    def context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = _VERSIONS[self.min_version]
        ctx.load_cert_chain(self.cert_file, self.key_file)
        if self.client_ca_file:
            ctx.load_verify_locations(self.client_ca_file)
        ctx.verify_mode = _CLIENT_AUTH[self.client_auth_type]
        return ctx


@dataclass(frozen=True)
class WebConfig:
    tls: TLSConfig | None = None
    basic_auth_users: dict[str, str] = field(default_factory=dict)


def load_web_config(path: str | Path) -> WebConfig:
    """Read and check the file; cert and key are loaded once here so a bad pair fails at start."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise WebConfigError(f"server.web_config_file: cannot read {path}: {exc}") from exc
    problems: list[str] = []
    if not isinstance(data, dict):
        raise WebConfigError(f"server.web_config_file: {path} must hold a mapping")
    for key in data:
        if key not in ("tls_server_config", "basic_auth_users"):
            problems.append(f"{path}: {key}: not supported by mlmon (supported: tls_server_config, basic_auth_users)")
    tls = None
    raw_tls = data.get("tls_server_config")
    if raw_tls is not None:
        tls = _tls(raw_tls, path, problems)
    users = data.get("basic_auth_users") or {}
    if not isinstance(users, dict):
        problems.append(f"{path}: basic_auth_users: must map user names to bcrypt hashes")
        users = {}
    for user, hashed in users.items():
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            problems.append(f"{path}: basic_auth_users.{user}: must be a bcrypt hash ($2b$...)")
    if users:
        try:
            import bcrypt  # noqa: F401
        except ImportError:
            problems.append(f"{path}: basic_auth_users: needs the bcrypt package (pip install 'mlmon[auth]')")
    if problems:
        raise WebConfigError("\n".join(problems))
    return WebConfig(tls=tls, basic_auth_users={str(u): str(h) for u, h in users.items()})


def _tls(raw: Any, path: Path, problems: list[str]) -> TLSConfig | None:
    where = f"{path}: tls_server_config"
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a mapping")
        return None
    for key in raw:
        if key not in _TLS_KEYS:
            problems.append(f"{where}.{key}: not supported by mlmon (supported: {', '.join(sorted(_TLS_KEYS))})")
    base = path.parent
    files = {}
    for key in ("cert_file", "key_file", "client_ca_file"):
        value = raw.get(key)
        if value is None:
            if key != "client_ca_file":
                problems.append(f"{where}.{key}: is required")
            continue
        files[key] = str(value if Path(str(value)).is_absolute() else base / str(value))
    auth = str(raw.get("client_auth_type", "NoClientCert"))
    if auth not in _CLIENT_AUTH:
        problems.append(f"{where}.client_auth_type: must be one of {', '.join(_CLIENT_AUTH)}")
    if auth != "NoClientCert" and "client_ca_file" not in files:
        problems.append(f"{where}.client_ca_file: is required when client_auth_type is {auth}")
    version = str(raw.get("min_version", "TLS12"))
    if version not in _VERSIONS:
        problems.append(f"{where}.min_version: must be one of {', '.join(_VERSIONS)}")
    if problems or "cert_file" not in files or "key_file" not in files:
        return None
    tls = TLSConfig(files["cert_file"], files["key_file"], files.get("client_ca_file"), auth, version)
    try:
        tls.context()
    except (OSError, ssl.SSLError) as exc:
        problems.append(f"{where}: cannot load the certificate and key: {exc}")
        return None
    return tls


class ReadAuth:
    """Credentials for GET routes: a bearer token and/or basic-auth users with bcrypt hashes.

    bcrypt costs ~100 ms by design; a verified header is remembered (as its SHA-256, never the
    password) so a scrape every few seconds does not pay it each time.
    """

    def __init__(self, token: str | None, users: dict[str, str]) -> None:
        self._bearer = f"Bearer {token}".encode() if token else None
        self._users = {u: h.encode() for u, h in users.items()}
        self._verified: set[bytes] = set()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self._bearer is not None or bool(self._users)

    @property
    def challenge(self) -> str:
        return 'Basic realm="mlmon"' if self._users else 'Bearer realm="mlmon"'

    def allows(self, header: str | None) -> bool:
        if not self.enabled:
            return True
        given = (header or "").encode("latin-1", "replace")
        if self._bearer is not None and hmac.compare_digest(given, self._bearer):
            return True
        if not self._users or given[:6].lower() != b"basic ":
            return False
        digest = hashlib.sha256(given).digest()
        with self._lock:
            if digest in self._verified:
                return True
        try:
            user, _, password = base64.b64decode(given[6:].strip(), validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return False
        import bcrypt

        hashed = self._users.get(user.decode("utf-8", "replace"))
        # An unknown user still pays one bcrypt check, so timing does not reveal which users exist.
        ok = bcrypt.checkpw(password, hashed or _DUMMY_HASH) and hashed is not None
        if ok:
            with self._lock:
                if len(self._verified) > 1000:
                    self._verified.clear()
                self._verified.add(digest)
        return ok


_DUMMY_HASH = b"$2b$10$" + b"C" * 53
