"""How every benchmark reports: an aligned table on stdout and the same figures in `.run/bench/`."""

from __future__ import annotations

import json
from typing import Any

from liaison.local.paths import run_dir


def report(name: str, result: dict[str, Any]) -> None:
    out = run_dir() / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key.ljust(width)}  {value}")
    print(f"\nwritten to {out / f'{name}.json'}")
