"""Help that helps: --help lists each launcher and sweeper once, and every cited doc section exists."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from weightshare.hydra_preflight import launcher_problem

REPO = Path(__file__).resolve().parents[1]
#: the plugins' base configs that the project's presets extend: not offered by --help
PLUGIN_BASES = {"joblib", "submitit_local", "submitit_slurm", "weightshare_packed"}


def test_help_lists_each_launcher_and_sweeper_once():
    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "--help"], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    launchers = re.search(r"^hydra/launcher: (.+)$", out, re.M).group(1).split(", ")
    presets = {p.stem for p in (REPO / "conf" / "hydra" / "launcher").glob("*.yaml")}
    assert sorted(launchers) == launchers and set(launchers) == {"basic", *presets}  # every preset, once
    assert not PLUGIN_BASES & set(launchers)
    assert re.search(r"^hydra/sweeper: basic, optuna$", out, re.M)
    for name in [*launchers, "optuna"]:  # each with a line saying what it is
        assert re.search(rf"^  {name} +\S", out, re.M), name
    assert "$APP_CONFIG_GROUPS" not in out and "model: cnn, fcn, lowrank" in out  # the template rendered


@pytest.mark.parametrize(
    ("launcher", "problem"),
    [
        ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": -1}, True),
        ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": 2}, False),
        ({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}, False),
    ],
)
def test_joblib_with_every_core_is_refused_with_the_preset_named(launcher, problem):
    message = launcher_problem(OmegaConf.create({"hydra": {"launcher": launcher}}))
    if problem:
        assert message.startswith("hydra.launcher.n_jobs=-1 starts one job per core") and "parallel" in message
        assert "\n" not in message
    else:
        assert message is None
    parallel = OmegaConf.load(REPO / "conf" / "hydra" / "launcher" / "parallel.yaml")
    assert parallel.n_jobs == 2  # the preset --help offers


#: `README.md, "Section"`, `README: "Section"`, `README "Section"`, ``docs/x.md``, section "Section"
CITATION = re.compile(
    r"(?P<file>README(?:\.md)?|docs/[\w./-]+\.md)`{0,2}[,:]?\s*(?:section\s+)?\(?\"(?P<section>[^\"\n]{3,80})\""
)
#: inside a Markdown file: (see "Section" below|above)
LOCAL = re.compile(r"[Ss]ee \"(?P<section>[^\"\n]{3,80})\" (?:below|above)")


def _sources() -> list[Path]:
    files = [REPO / "README.md", REPO / "Makefile", REPO / "train.py"]
    for folder, pattern in [("src", "*.py"), ("conf", "*.yaml"), ("docs", "*.md"), ("scripts", "*.py")]:
        files += sorted((REPO / folder).rglob(pattern))
    return files


def _headings(path: Path) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(r"^#{1,6}\s+(.+)$", path.read_text(), re.M)]


def _has_section(headings: list[str], section: str) -> bool:
    """A heading that is the section, or the section with a qualifier in brackets ("Sweep budgets (...) ...")."""
    return any(h == section or h.startswith(section + " (") for h in headings)


def citations() -> list[tuple[str, Path, str]]:
    found = []
    for path in _sources():
        text = path.read_text()
        where = str(path.relative_to(REPO))
        for m in CITATION.finditer(text):
            cited = m.group("file")
            target = REPO / ("README.md" if cited.startswith("README") else cited)
            # a README cited from inside docs/results/<x>/ is that folder's own README
            if cited.startswith("README") and path.name == "README.md" and path.parent != REPO:
                target = path
            found.append((where, target, m.group("section")))
        if path.suffix == ".md":
            found += [(where, path, m.group("section")) for m in LOCAL.finditer(text)]
    return found


def test_every_cited_section_exists():
    found = citations()
    assert len(found) >= 5  # the pattern finds the citations it is meant for
    assert any(where == "conf/hydra/launcher/packed.yaml" for where, _, _ in found)
    missing = []
    for where, target, section in found:
        if not target.is_file():
            missing.append(f"{where}: {target.relative_to(REPO)} does not exist")
        elif not _has_section(_headings(target), section):
            missing.append(f'{where}: {target.relative_to(REPO)} has no section "{section}"')
    assert not missing, "\n".join(missing)


def test_the_section_check_catches_a_missing_section(tmp_path):
    """The check itself: a heading with a qualifier counts, a bullet's bold title does not."""
    doc = tmp_path / "x.md"
    doc.write_text(
        "# Title\n\n## Packed sweeps\n\n## Sweep budgets (paper_translate) on this CPU\n\n- **how to pick**\n"
    )
    headings = _headings(doc)
    assert _has_section(headings, "Packed sweeps") and _has_section(headings, "Sweep budgets")
    assert not _has_section(headings, "how to pick") and not _has_section(headings, "Packed")
