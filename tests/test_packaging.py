"""The distribution installs one import package, ``deltawire``, so it can live beside
PyPI's ``watchdog`` (filesystem events) or any other top-level ``collector``/``protocol``."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import zipfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_holds_only_the_deltawire_namespace(tmp_path: pathlib.Path) -> None:
    # The build backend itself (a dev dependency), as `pip wheel .` runs it, without
    # pip's isolated build environment: no venv to create, nothing from the network.
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(tmp_path)],
        cwd=REPO,
        check=True,
        timeout=300,
        stdout=subprocess.DEVNULL,
    )
    (wheel,) = tmp_path.glob("deltawire-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        scripts = zf.read(entry_points).decode()
    top = {n.split("/", 1)[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"deltawire"}
    # The mapped folders are really inside: the collector, the agent and the protocol.
    # ...and the dashboard's built pages, which the collector serves without Node.
    for module in ("collector/cli.py", "watchdog/cli.py", "protocol/__init__.py",
                   "collector/api/static/index.html", "collector/api/static/app.js"):  # fmt: skip
        assert f"deltawire/{module}" in names
    assert "collector = deltawire.collector.cli:main" in scripts
    assert "watchdog = deltawire.watchdog.cli:main" in scripts
