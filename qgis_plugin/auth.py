"""The backend's API token, kept in QGIS's authentication database (never in plain settings).

The token is stored as an auth configuration of method "Basic" (QGIS 3.22 has no "APIHeader"
method; user name `AUTH_USERNAME`, the token as the password, encrypted with the user's master
password). Only the configuration's id (`authcfg`) is kept in `QgsSettings` under
`ccg_autopkg/authcfg`. The plugin does not let QGIS apply the configuration to requests (Basic
would send `Authorization: Basic …`); it reads the token and sends `Authorization: Bearer <token>`
itself (`bearer_header`).
"""
from __future__ import annotations

from typing import Optional

from qgis.core import QgsApplication, QgsAuthMethodConfig

from .__about__ import PLUGIN_NAME
from .settings import settings

AUTH_METHOD = "Basic"
AUTH_USERNAME = "api-token"
AUTH_CONFIG_NAME = f"{PLUGIN_NAME} API token"


class TokenStoreError(RuntimeError):
    """The token could not be stored in (or read from) the authentication database."""


def _manager():
    return QgsApplication.authManager()


def auth_unavailable_reason() -> str:
    """Empty when tokens can be kept in the authentication database, else why not."""
    manager = _manager()
    if manager is None:
        return "the QGIS authentication system is not initialised"
    if manager.isDisabled():
        return manager.disabledMessage().strip() or "the QGIS authentication system is disabled"
    if AUTH_METHOD not in manager.authMethodsKeys():
        return f"the QGIS authentication method {AUTH_METHOD!r} is not available"
    return ""


def stored_authcfg() -> str:
    """The id of the auth configuration holding the token ('' when none)."""
    return settings.authcfg


def load_token(authcfg: Optional[str] = None) -> str:
    """The token of `authcfg` (default: the stored one); '' when there is none or it cannot be read
    (e.g. the master password was not given)."""
    authcfg = stored_authcfg() if authcfg is None else authcfg
    if not authcfg or auth_unavailable_reason():
        return ""
    manager = _manager()
    if authcfg not in manager.configIds():
        return ""
    config = QgsAuthMethodConfig()
    loaded = manager.loadAuthenticationConfig(authcfg, config, True)
    ok = loaded[0] if isinstance(loaded, tuple) else bool(loaded)
    if isinstance(loaded, tuple) and len(loaded) > 1 and isinstance(loaded[1], QgsAuthMethodConfig):
        config = loaded[1]
    return (config.config("password") or "") if ok else ""


def save_token(token: str) -> str:
    """Store `token` in the authentication database (updating the plugin's configuration if there
    is one) and keep only its id in the settings; an empty token removes it. Returns the authcfg id
    ('' after removal). Raises `TokenStoreError` when the database refuses (no master password…)."""
    token = (token or "").strip()
    reason = auth_unavailable_reason()
    if reason:
        raise TokenStoreError(reason)
    manager = _manager()
    existing = stored_authcfg()
    if existing and existing not in manager.configIds():
        existing = ""
    if not token:
        if existing:
            manager.removeAuthenticationConfig(existing)
        settings.authcfg = ""
        return ""
    config = QgsAuthMethodConfig(AUTH_METHOD)
    config.setName(AUTH_CONFIG_NAME)
    config.setConfig("username", AUTH_USERNAME)
    config.setConfig("password", token)
    if existing:
        config.setId(existing)
        ok = manager.updateAuthenticationConfig(config)
    else:
        stored = manager.storeAuthenticationConfig(config)
        ok = stored[0] if isinstance(stored, tuple) else bool(stored)
        if isinstance(stored, tuple) and len(stored) > 1 and isinstance(stored[1], QgsAuthMethodConfig):
            config = stored[1]
    if not ok or not config.id():
        raise TokenStoreError("the QGIS authentication database did not accept the token "
                              "(is the master password set? see Settings > Options > Authentication)")
    settings.authcfg = config.id()
    return config.id()


def bearer_header(token: str) -> Optional[bytes]:
    """The `Authorization` header value for `token` (None without a token)."""
    token = (token or "").strip()
    return f"Bearer {token}".encode("utf-8") if token else None
