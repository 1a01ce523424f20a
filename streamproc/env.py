"""Every environment variable streamproc reads, through typed getters.

STREAMPROC_CACHE_DIR    downloaded and converted weights (default: user cache dir)
STREAMPROC_DATA_DIR     embedded Redis data, gallery crops (default: user data dir)
STREAMPROC_REDIS_URL    redis:// or rediss:// URL of the gallery; unset = embedded server
STREAMPROC_RAY_ADDRESS  address of a Ray cluster; unset = start a local one
RAY_ADDRESS             Ray's own: set by `ray job submit` / KubeRay for a job's driver; joined
                        when STREAMPROC_RAY_ADDRESS is unset (read here only, never set)
STREAMPROC_SHARED_DATA  folder with test data (LFW, videos); used by tests and benches only
STREAMPROC_OFFLINE      1 = never download, use the cache only
"""

from __future__ import annotations

import os
from pathlib import Path

from streamproc.errors import ConfigError

_APP = "streamproc"


def get_str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return default if value in (None, "") else value


def get_bool(name: str, default: bool = False) -> bool:
    value = get_str(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={value!r}: expected one of 1/0, true/false, yes/no, on/off")


def get_path(name: str, default: Path) -> Path:
    value = get_str(name)
    return Path(value).expanduser() if value else default


def _xdg(var: str, fallback: str) -> Path:
    base = get_str(var)
    return Path(base) if base else Path.home() / fallback


def cache_dir() -> Path:
    return get_path("STREAMPROC_CACHE_DIR", _xdg("XDG_CACHE_HOME", ".cache") / _APP)


def data_dir() -> Path:
    return get_path("STREAMPROC_DATA_DIR", _xdg("XDG_DATA_HOME", ".local/share") / _APP)


def redis_url() -> str | None:
    return get_str("STREAMPROC_REDIS_URL")


def ray_address() -> str | None:
    return get_str("STREAMPROC_RAY_ADDRESS")


def ray_job_address() -> str | None:
    """Ray's own ``RAY_ADDRESS``: inside ``ray job submit`` (or a KubeRay RayJob) the cluster to join."""
    return get_str("RAY_ADDRESS")


def offline() -> bool:
    return get_bool("STREAMPROC_OFFLINE")


def shared_data() -> Path:
    """Folder of shared test data; defaults to ``../shared/data`` beside the checkout."""
    default = Path(__file__).resolve().parents[2] / "shared" / "data"
    return get_path("STREAMPROC_SHARED_DATA", default)
