"""
Temporary paths for tests, removed afterwards (trial's C{mktemp} makes them
under the current directory, which is the checkout under pytest).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase


def temporary(case: SynchronousTestCase) -> str:
    """
    A path that does not exist yet, in a directory removed after C{case}.
    """
    directory = tempfile.mkdtemp(prefix="revproxy-test-")
    case.addCleanup(shutil.rmtree, directory, True)
    return str(Path(directory) / "temp")
