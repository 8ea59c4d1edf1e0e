"""Where the service is and which token to send: environment variables or a private config file.

Never the command line: arguments show in `ps` and in the shell's history.
"""
from __future__ import annotations

import configparser
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

ENV_URL = "MRI_URL"
ENV_TOKEN = "MRI_TOKEN"
ENV_CONFIG = "MRI_CONFIG"
SECTION = "mri-classify"


class ConfigError(Exception):
    """The URL or token is missing, or the config file is unsafe or unreadable."""


@dataclass(frozen=True)
class Config:
    """The service's base URL and the bearer token, with where each came from."""

    url: str
    token: str
    url_from: str
    token_from: str


def config_path(environ: Mapping[str, str]) -> Path:
    """MRI_CONFIG, else $XDG_CONFIG_HOME/mri-classify/config (~/.config/mri-classify/config)."""
    if environ.get(ENV_CONFIG):
        return Path(environ[ENV_CONFIG]).expanduser()
    base = environ.get("XDG_CONFIG_HOME") or str(Path(environ.get("HOME") or Path.home()) / ".config")
    return Path(base) / "mri-classify" / "config"


def read_file(path: Path) -> dict[str, str]:
    """The file's url and token ({} when there is no file); refuses a token others can read."""
    if not path.exists():
        return {}
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(path.read_text(encoding="utf-8"), source=str(path))
    except (OSError, UnicodeDecodeError, configparser.Error) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    if not parser.has_section(SECTION):
        raise ConfigError(f"{path} has no [{SECTION}] section (see `mri-classify configure`)")
    values = {k: v.strip() for k, v in parser.items(SECTION) if k in ("url", "token") and v.strip()}
    unknown = sorted(set(parser.options(SECTION)) - {"url", "token"})
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; only url and token are read")
    mode = stat.S_IMODE(path.stat().st_mode)
    if "token" in values and mode & 0o077:
        raise ConfigError(f"{path} holds a token but others may read it (mode {mode:o}); "
                          f"run: chmod 600 {path}")
    return values


def load_config(environ: Mapping[str, str]) -> Config:
    """MRI_URL / MRI_TOKEN, each falling back to the config file."""
    path = config_path(environ)
    from_file = read_file(path)
    url = environ.get(ENV_URL) or from_file.get("url")
    token = environ.get(ENV_TOKEN) or from_file.get("token")
    if not url:
        raise ConfigError(f"no service URL: set {ENV_URL} (e.g. http://127.0.0.1:5000) or `url = ...` in {path}")
    if not token:
        raise ConfigError(f"no token: set {ENV_TOKEN} or `token = ...` in {path} (mode 600); "
                          "an admin makes one with `flask --app web create-token NAME --role uploader`")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"the service URL must start with http:// or https://, got {url!r}")
    return Config(url=url.rstrip("/"), token=token,
                  url_from=ENV_URL if environ.get(ENV_URL) else str(path),
                  token_from=ENV_TOKEN if environ.get(ENV_TOKEN) else str(path))


def write_config(path: Path, url: str, token: str) -> None:
    """Write url and token to `path`, readable by its owner only (folder 0700, file 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    parser = configparser.ConfigParser(interpolation=None)
    parser[SECTION] = {"url": url, "token": token}
    # Created 0600 from the start, so the token is never readable by others, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        parser.write(handle)
