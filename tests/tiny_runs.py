"""The overrides of a tiny real run, shared by the tests that start many of them.

About two seconds and 1.3 MB checkpoints per run: 256 synthetic images, an 8-unit hidden
layer, the minimal callbacks (checkpoints, CSV), clean evaluation only, one thread, no test
pass and no logger. Tests add what they exercise (epochs, early stopping).
"""

from __future__ import annotations

TINY_RUN = [
    "data=synthetic",
    "data.options.size=256",
    "model.hidden=8",
    "callbacks=minimal",
    "eval=clean",
    "threads=1",
    "test=false",
    "logger=none",
]
