"""`python -m npsflow.healthcheck [readyz|healthz]`: the container HEALTHCHECK (deploy/Dockerfile, deploy/compose.yaml).

Asks this container's own public listener (NPSFLOW_PUBLIC_BIND's port, on loopback) for ``/readyz`` (default) or
``/healthz``; exit 0 on 200, else 1 with one line. Standard library only (slim images have no curl), no token needed
(both paths are open on both listeners), and nothing but the endpoint's status is printed."""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request


def probe_url(env: dict, path: str = "readyz") -> str:
    raw = (env.get("NPSFLOW_PUBLIC_BIND") or "0.0.0.0:8080").strip()
    host, _, port = raw.rpartition(":")
    if not port.isdigit() or port == "0":
        raise ValueError(f"NPSFLOW_PUBLIC_BIND needs a fixed port for the healthcheck, got {raw!r}")
    loopback = "[::1]" if host.startswith("[") else "127.0.0.1"
    if host.strip("[]") not in ("", "0.0.0.0", "::", "127.0.0.1", "::1", "localhost"):
        loopback = host  # bound to one address only: ask that one
    return f"http://{loopback}:{port}/{path}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = args[0] if args else "readyz"
    if path not in ("readyz", "healthz"):
        print("usage: python -m npsflow.healthcheck [readyz|healthz]", file=sys.stderr)
        return 2
    try:
        url = probe_url(dict(os.environ), path)
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 (loopback, fixed scheme)
            print(f"{path}: {resp.status}")
            return 0 if resp.status == 200 else 1
    except urllib.error.HTTPError as exc:  # 503 unhealthy: say why (the reasons hold no secrets)
        try:
            reasons = "; ".join(json.loads(exc.read() or b"{}").get("reasons") or [])
        except ValueError:
            reasons = ""
        print(f"{path}: {exc.code} {reasons}".rstrip())
        return 1
    except (OSError, ValueError) as exc:
        print(f"{path}: {type(exc).__name__}: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
