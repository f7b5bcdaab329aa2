"""docs/architecture.md's package map lists every module under src/weightshare."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "src" / "weightshare"


def _modules() -> set[str]:
    out = set()
    for path in PKG.rglob("*.py"):
        parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out.add(".".join(parts))
    return out


def _package_map() -> set[str]:
    text = (REPO / "docs" / "architecture.md").read_text()
    section = text.split("## Package map", 1)[1].split("\n## ", 1)[0]
    names = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            first_cell = line.split("|")[1]
            names.update(re.findall(r"`([\w.]+)`", first_cell))
    return names


def test_every_module_is_in_the_package_map() -> None:
    listed = _package_map()
    assert "weightshare.job" in listed  # the map was found and read
    missing = sorted(_modules() - listed)
    assert missing == [], f"add these to the package map in docs/architecture.md: {missing}"


def test_the_package_map_names_no_module_that_does_not_exist() -> None:
    stale = sorted(n for n in _package_map() if n.startswith("weightshare") and n not in _modules())
    assert stale == []
