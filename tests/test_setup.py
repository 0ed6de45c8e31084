"""The set-up path: pinned build tools, one-line step errors, and the torch floor declared once."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from hpcgan.errors import UserError
from hpcgan.runtime.versions import MIN_TORCH, check_torch, parse_version

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].split(";", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[name.strip().lower()] = version.strip()
    return pins


def test_every_horovod_build_tool_is_pinned_and_cmake_is_3x():
    script = (SCRIPTS / "setup_env.sh").read_text()
    line = next(ln for ln in script.splitlines() if "run_step horovod-build-tools" in ln)
    tools = [w for w in line.split('"$CONSTRAINTS"', 1)[1].split() if not w.startswith(("-", '"', "$"))]
    assert "cmake" in tools and "setuptools" in tools
    pins = {**_pins(SCRIPTS / "constraints.txt"), **_pins(SCRIPTS / "constraints-build.txt")}
    assert [t for t in tools if t not in pins] == []
    # cmake 4 refuses Horovod's vendored gloo (cmake_minimum_required < 3.5).
    assert parse_version(pins["cmake"])[0] == 3


def test_every_python_dependency_is_pinned():
    script = (SCRIPTS / "setup_env.sh").read_text()
    deps = re.search(r"^DEPS=\(([^)]*)\)", script, re.M).group(1).split()
    pins = _pins(SCRIPTS / "constraints.txt")
    assert [d for d in deps if d.lower() not in pins] == []


def _run_step(tmp_path: Path, command: str) -> subprocess.CompletedProcess:
    script = f'source "{SCRIPTS / "setup_lib.sh"}"; run_step demo bash -c {command!r}; echo after'
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60,
                          env={"HPCGAN_SETUP_LOGS": str(tmp_path / "logs"), "PATH": "/usr/bin:/bin"})


def test_failing_step_prints_one_line_with_cause_and_log(tmp_path):
    noise = "; ".join(f"echo traceback line {i}" for i in range(200))
    proc = _run_step(tmp_path, f"{noise}; echo 'CMake Error at third_party/gloo/CMakeLists.txt:1'; exit 3")
    assert proc.returncode == 3
    assert proc.stdout == ""  # the script stopped at the failing step
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    log = tmp_path / "logs" / "demo.log"
    assert lines[0] == (f"[setup_env] error: step 'demo' failed (exit 3): CMake Error at "
                        f"third_party/gloo/CMakeLists.txt:1; full log: {log}")
    assert "traceback line 199" in log.read_text()


def test_passing_step_is_silent(tmp_path):
    proc = _run_step(tmp_path, "echo building; echo more")
    assert proc.returncode == 0 and proc.stderr == "" and proc.stdout == "after\n"
    assert (tmp_path / "logs" / "demo.log").read_text() == "building\nmore\n"


def test_torch_floor_is_declared_once():
    setup = (REPO / "setup.py").read_text()
    floor = re.search(r'"torch>=([\d.]+)"', setup).group(1)
    assert parse_version(floor) == MIN_TORCH


@pytest.mark.parametrize("version,ok", [("2.13.0+cpu", True), ("2.3.0", True), ("2.6.0a0+git1234", True),
                                        ("2.2.2", False), ("1.13.1+cu117", False)])
def test_torch_version_check(version, ok):
    if ok:
        check_torch(version)
    else:
        with pytest.raises(UserError, match=rf"torch {re.escape(version)} is older than 2\.3"):
            check_torch(version)
