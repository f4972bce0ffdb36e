"""
The wheel ships what the checkout has: every module of every subpackage,
the typing marker and the twistd plugin, and nothing that would overwrite
Twisted's own files.  (Tests run from the checkout cannot see a forgotten
subpackage; only the built wheel shows it.)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def test_wheelHoldsEveryModule(tmp_path: Path) -> None:
    """
    The wheel built from the checkout holds every module of revproxy, its
    py.typed and the plugin file, and no twisted/__init__.py, no
    twisted/plugins/__init__.py and no dropin.cache.
    """
    # Built from a copy: a build/ directory left in the checkout by an
    # earlier build would otherwise supply files the configuration forgot.
    source = tmp_path / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "*.egg-info", "__pycache__", "_trial_temp*",
            ".mypy_cache", ".ruff_cache", ".pytest_cache",
        ),
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(source)],
        check=True,
        capture_output=True,
    )
    [wheel] = tmp_path.glob("revproxy-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        str(p.relative_to(source)) for p in (source / "revproxy").rglob("*.py")
    } | {"revproxy/py.typed", "twisted/plugins/revproxy_plugin.py"}
    assert expected - names == set()
    assert "twisted/__init__.py" not in names
    assert "twisted/plugins/__init__.py" not in names
    assert not [n for n in names if n.endswith("dropin.cache")]
    assert not [n for n in names if n.startswith(("tests/", "bench/"))]
