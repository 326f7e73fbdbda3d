"""Where a benchmark's report goes: ``OUT.md`` (what it printed) beside ``OUT.json`` (its numbers)."""

from __future__ import annotations

import json
from pathlib import Path


def write_report(out: Path, md: str, data: object, indent: int = 2) -> tuple[Path, Path]:
    """Write both files (creating the folder); returns their paths."""
    out.parent.mkdir(parents=True, exist_ok=True)
    md_path, json_path = out.with_suffix(".md"), out.with_suffix(".json")
    md_path.write_text(md + "\n")
    json_path.write_text(json.dumps(data, indent=indent) + "\n")
    return md_path, json_path
