"""Where the bundle versions ``hea-screen update`` writes live, and finding one by name.

A new version never goes into the installed package (a site-packages directory, or a git
checkout's tracked tree): it goes to ``--out`` or to the user data directory of the XDG Base
Directory specification, ``$XDG_DATA_HOME/hea-screen/models`` (``~/.local/share/hea-screen/
models`` when ``XDG_DATA_HOME`` is unset or not an absolute path). ``--model`` then takes a
bundle directory or the name of a version there (``default.v2``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from hea_screen.inference.bundle_files import SHIPPED_MODELS

APP = "hea-screen"


def data_dir() -> Path:
    """``$XDG_DATA_HOME/hea-screen`` or ``~/.local/share/hea-screen``."""
    base = os.environ.get("XDG_DATA_HOME", "")
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".local" / "share"
    return root / APP


def models_dir() -> Path:
    """Where updated bundle versions go by default."""
    return data_dir() / "models"


def next_version(bundle: Path) -> Path:
    """``<models_dir>/<name>.vN``: the first free N >= 2 for the bundle's base name (an
    update of ``default.v2`` gives ``default.v3``)."""
    base = re.sub(r"\.v\d+$", "", bundle.resolve().name)
    n = int(m[1]) + 1 if (m := re.search(r"\.v(\d+)$", bundle.name)) else 2
    while (models_dir() / f"{base}.v{n}").exists():
        n += 1
    return models_dir() / f"{base}.v{n}"


def versions() -> list[str]:
    """Names of the versions in :func:`models_dir`."""
    root = models_dir()
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def resolve_model(text: str) -> str:
    """A ``--model`` value: a shipped bundle's name (``default``, ``transformer``) or a bundle
    directory as given, or, when no such path exists and the text is a plain name, the
    version of that name in :func:`models_dir`."""
    if text in SHIPPED_MODELS:  # a shipped bundle's name, resolved by bundle_root
        return text
    path = Path(text).expanduser()
    if path.exists() or "/" in text or os.sep in text:
        return str(path)
    named = models_dir() / text
    return str(named) if named.is_dir() else text
