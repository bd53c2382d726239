"""Generates the Python FlatBuffers code from schemas/signaling.fbs with the pinned flatc."""

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLATC_VERSION = "25.12.19"
ROOT = Path(__file__).resolve().parents[3]
SCHEMA = ROOT / "schemas" / "signaling.fbs"

_done = False


class GenError(Exception):
    """flatc is missing, has the wrong version, or failed."""


def ensure():
    """Generates the code once per process into a temporary directory on sys.path."""
    global _done
    if _done:
        return
    flatc = os.environ.get("FLATC", "flatc")
    try:
        version = subprocess.run(
            [flatc, "--version"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as e:
        raise GenError(f"cannot run {flatc} (install it with e2e/scripts/install-deps): {e}") from e
    if version != f"flatc version {FLATC_VERSION}":
        raise GenError(f"flatc must be {FLATC_VERSION} (the flatbuffers package's), found {version!r}")
    import flatbuffers

    if flatbuffers.__version__ != FLATC_VERSION:
        raise GenError(f"the flatbuffers package must be {FLATC_VERSION}, found {flatbuffers.__version__}")
    out = tempfile.mkdtemp(prefix="sbclient-gen-")
    atexit.register(shutil.rmtree, out, True)
    result = subprocess.run(
        [flatc, "--python", "--gen-object-api", "-o", out, str(SCHEMA)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise GenError(f"flatc --python failed: {result.stderr.strip()}")
    sys.path.insert(0, out)
    _done = True
