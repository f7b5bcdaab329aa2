"""``load_config`` finds the project's data/ and outputs/ from any current directory."""

from __future__ import annotations

from pathlib import Path

from weightshare.config.compose import load_config

REPO = Path(__file__).resolve().parents[1]


def test_paths_resolve_against_the_project_root_from_another_directory(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("WEIGHTSHARE_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    cfg = load_config([f"paths.output_dir={tmp_path / 'run'}"])
    assert cfg.paths.root_dir == str(REPO)
    assert cfg.data.root == str(REPO / "data")
    assert cfg.paths.log_dir == str(REPO / "outputs")


def test_weightshare_root_overrides_the_checkout(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("WEIGHTSHARE_ROOT", str(tmp_path))
    cfg = load_config([f"paths.output_dir={tmp_path / 'run'}"])
    assert cfg.paths.root_dir == str(tmp_path.resolve())
    assert cfg.data.root == str(tmp_path.resolve() / "data")
