"""The oracle scripts' one venv (~/.cache/kvtrim/venv, or $KVTRIM_CACHE/venv): never system-wide."""
import os
import pathlib
import subprocess
import sys

VENV = pathlib.Path(os.environ.get("KVTRIM_CACHE", pathlib.Path.home() / ".cache" / "kvtrim")) / "venv"


def ensure_venv(*requirements):
    """Re-executes the calling script with the venv's python, creating the venv and installing
    `requirements` (pinned pip specifiers) first if needed."""
    python = VENV / "bin" / "python"
    if pathlib.Path(sys.prefix).resolve() == VENV.resolve():
        return
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *requirements], check=True)
    os.execv(str(python), [str(python), *sys.argv])
