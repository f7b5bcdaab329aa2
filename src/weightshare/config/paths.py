"""Where the project lives: its root (``conf/``, ``data/``, ``outputs/``), whatever the current directory.

``paths.root_dir`` in the config is ``${ws_project_root:}``, this module's resolver, so a
config composed from a notebook or a tool in another directory (``load_config``) finds the
same ``data/`` and ``outputs/`` as ``python train.py`` run from the checkout.
``$WEIGHTSHARE_ROOT`` overrides it (an installed package used outside its checkout).
"""

from __future__ import annotations

import os
from pathlib import Path

#: the checkout: three levels above this file (src/weightshare/config/paths.py)
ROOT = Path(__file__).resolve().parents[3]
#: the Hydra config directory: ``conf/`` of the project, or ``$WEIGHTSHARE_CONF``
CONF_DIR = Path(os.environ.get("WEIGHTSHARE_CONF", str(ROOT / "conf")))

RESOLVER = "ws_project_root"


def project_root() -> str:
    """``$WEIGHTSHARE_ROOT`` if set, else the checkout this package was loaded from (absolute)."""
    return str(Path(os.environ.get("WEIGHTSHARE_ROOT") or ROOT).resolve())


def register_root_resolver() -> None:
    """Make ``${ws_project_root:}`` available to OmegaConf (idempotent)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, project_root)
