"""`KEY=value` files such as `.local/stack.env`: the one reader the scripts share."""
from __future__ import annotations

from pathlib import Path


def read_env_file(path: Path) -> dict[str, str]:
    """Each `KEY=value` line (the value as written, `=` and all); blank lines and `#` comments skipped."""
    env = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            env[k] = v
    return env
