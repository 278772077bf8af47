"""How commands find the service that holds the data directory: ``tvflux serve`` writes
``TVFLUX_DATA_DIR/service.json`` (``url``, ``pid``, ``store``) once it has bound its port,
and removes it on exit. Commands read it instead of guessing from ``TVFLUX_HOST`` /
``TVFLUX_PORT``, so they reach the service on whatever port it listens. A file left by a
killed service is ignored (its ``pid`` is gone)."""

from __future__ import annotations

import contextlib
import json
import os

SERVICE_FILE = "service.json"


def service_file(data_dir: str) -> str:
    return os.path.join(data_dir, SERVICE_FILE)


def url_for(host: str, port: int) -> str:
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def write_service_file(data_dir: str, url: str, store: str) -> None:
    os.makedirs(data_dir, exist_ok=True)
    path = service_file(data_dir)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump({"url": url, "pid": os.getpid(), "store": store}, f)
    os.replace(tmp, path)


def remove_service_file(data_dir: str) -> None:
    """Only this process's own file (a second service on the same directory never started)."""
    found = read_service_file(data_dir, check_alive=False)
    if found is not None and found.get("pid") == os.getpid():
        with contextlib.suppress(OSError):
            os.remove(service_file(data_dir))


def read_service_file(data_dir: str, *, check_alive: bool = True) -> dict | None:
    try:
        with open(service_file(data_dir)) as f:
            found = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(found, dict) or not isinstance(found.get("pid"), int) or not isinstance(found.get("url"), str):
        return None
    if check_alive:
        try:
            os.kill(found["pid"], 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # alive, another user's
    return found


def running_service_url(data_dir: str) -> str | None:
    found = read_service_file(data_dir)
    return None if found is None else str(found["url"])
