"""Container health check: exit 0 when the service answers 200 on a path (the slim image has no curl).

Usage: docker-healthcheck [/healthz | /readyz]. The port is BIND's, else the service's default.
"""

import os
import sys
import urllib.request

DEFAULT_PORTS = {"chat_service": "5001", "conversation_service": "5002"}


def main() -> int:
    path = sys.argv[1] if len(sys.argv) > 1 else "/healthz"
    port = os.environ.get("BIND", "").rpartition(":")[2] or DEFAULT_PORTS.get(os.environ.get("SERVICE", ""))
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=4) as response:
            return 0 if response.status == 200 else 1
    except OSError as error:
        print(f"{path}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
