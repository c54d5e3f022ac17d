import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"


@pytest.fixture(scope="session")
def root():
    return ROOT


@pytest.fixture(scope="session")
def fixtures():
    return FIXTURES


@pytest.fixture(scope="session")
def oracle(tmp_path_factory):
    """The C++ oracle (oracle.cpp) compiled against the repository's headers."""
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        pytest.fail("no C++ compiler for the oracle")
    exe = tmp_path_factory.mktemp("oracle") / "oracle"
    eigen = "/usr/include/eigen3"
    cmd = [cxx, "-std=c++17", "-O2", "-Wall", "-Wextra", "-Werror", "-fopenmp", f"-I{ROOT / 'include'}",
           f"-I{eigen}", str(pathlib.Path(__file__).with_name("oracle.cpp")), "-o", str(exe)]
    subprocess.run(cmd, check=True)
    return exe
