#!/usr/bin/env python3
"""Copy the package into an add-on: `python3 client/vendor.py DEST` makes DEST/ankicollab_media
(Python sources and py.typed only, nothing compiled), replacing what a previous run put there."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent / "ankicollab_media"


def vendor(dest: Path) -> Path:
    target = dest / "ankicollab_media"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for f in sorted(SRC.iterdir()):
        if f.suffix == ".py" or f.name == "py.typed":
            shutil.copy2(f, target / f.name)
    return target


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python3 client/vendor.py DEST  (makes DEST/ankicollab_media)")
    print(vendor(Path(sys.argv[1])))
