"""``make wheelhouse``: an install with no network over an existing torch (compute nodes without internet).

The download itself needs the registry (``make wheelhouse`` is run on a login node); what
is tested here offline is the rest: which packages it keeps (everything but torch and
torch's own CUDA libraries), and that the documented command installs the project from a
wheelhouse into a fresh virtual environment with ``--no-index``, over packages that are
already there (as torch is on a GPU node).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _wheelhouse_module():
    spec = importlib.util.spec_from_file_location("wheelhouse", REPO / "scripts" / "wheelhouse.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_everything_but_torch_is_downloaded() -> None:
    report = {"install": [{"metadata": {"name": n, "version": v}, "download_info": {"url": f"https://x/{n}-{v}.{e}"}}
                          for n, v, e in [
        ("torch", "2.13.0", "whl"), ("nvidia-cublas-cu12", "12.4", "whl"), ("triton", "3.1", "whl"),
        ("weightshare", "0.1.0", "whl"), ("pytorch_lightning", "2.5.0", "whl"), ("Jinja2", "3.1.4", "whl"),
        ("hydra-core", "1.3.2", "whl"), ("antlr4-python3-runtime", "4.9.3", "tar.gz"), ("torchmetrics", "1.6", "whl"),
    ]]}  # fmt: skip
    assert _wheelhouse_module().wanted(report) == (
        ["hydra-core==1.3.2", "jinja2==3.1.4", "pytorch-lightning==2.5.0", "torchmetrics==1.6"],
        ["antlr4-python3-runtime==4.9.3"],  # no wheel published: built here
    )


@pytest.mark.timeout(300)
def test_install_from_a_wheelhouse_with_no_index(tmp_path: Path) -> None:
    """The README's offline command installs the project's wheel into a fresh venv that has the rest."""
    house = tmp_path / "wheelhouse"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(house), str(REPO)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    if built.returncode != 0:  # building needs hatchling from the registry
        pytest.skip(f"could not build the project's wheel: {built.stderr.strip()[-300:]}")
    # a fresh venv that already has torch and the other dependencies (and pip), linked from this one; not the project
    site = Path(sysconfig.get_paths()["purelib"])
    have = tmp_path / "have"
    have.mkdir()
    for entry in site.iterdir():
        if not entry.name.startswith(("weightshare", "_editable_impl_weightshare", "__editable__")):
            (have / entry.name).symlink_to(entry)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "fresh")], check=True, timeout=120)
    py = tmp_path / "fresh" / "bin" / "python"
    # the fresh venv sees only what it installed (a PYTHONPATH to a checkout would shadow the wheel)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    fresh_site = Path(subprocess.check_output([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                              text=True).strip())  # fmt: skip
    (fresh_site / "existing.pth").write_text(f"{have}\n")
    install = subprocess.run(
        [py, "-m", "pip", "install", "--no-index", "--find-links", str(house), "weightshare"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]
    assert "Successfully installed weightshare-" in install.stdout
    where = subprocess.check_output(
        [py, "-c", "import weightshare, hydra_plugins.weightshare_slurm_launcher as s; print(weightshare.__file__)"],
        text=True,
        cwd=tmp_path,
        env=env,
    ).strip()
    assert Path(where).is_relative_to(fresh_site)  # the wheel's copy, not this checkout
