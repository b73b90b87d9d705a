"""Install what you use: a gateway-only install runs without llama.cpp, ExaBGP, HiGHS or matplotlib, and a
command that needs one of them says which extra to install. The missing packages are made missing for real in a
child interpreter (a finder that refuses them), the way a smaller install would lack them."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, SMALL_FLEET

EXTRAS = {"llamacpp": {"xllamacpp", "gguf"}, "bgp": {"exabgp"}, "plan": {"highspy", "matplotlib"}}
HIDDEN = sorted(set().union(*EXTRAS.values()))
BLOCKER = """
import importlib.abc, os, sys

class _Missing(importlib.abc.MetaPathFinder):
    hidden = set(os.environ["EDGEPLANE_TEST_HIDE"].split(","))

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.hidden:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _Missing())
"""


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path), "EDGEPLANE_TEST_HIDE": ",".join(HIDDEN)}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)


def test_the_heavy_parts_are_extras_of_the_package() -> None:
    requires = importlib.metadata.requires("edgeplane") or []
    for extra, packages in EXTRAS.items():
        for package in packages:
            [line] = [r for r in requires if r.startswith(package + "==")]
            assert f'extra == "{extra}"' in line, line


def test_a_gateway_only_install_serves_and_names_the_extra_a_command_needs(tmp_path: Path) -> None:
    # The blocker works: the hidden packages are missing in the child.
    done = run(tmp_path, "-c", "import highspy")
    assert done.returncode != 0 and "No module named 'highspy'" in done.stderr

    imports = "import edgeplane.gateway, edgeplane.control, edgeplane.site, edgeplane.bgp, edgeplane.cli; print('ok')"
    done = run(tmp_path, "-c", imports)
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr

    demand = str(ROOT / "tests" / "data" / "demand.csv")
    (tmp_path / "model.gguf").write_bytes(b"GGUF")  # never read: the backend needs llama.cpp first
    for argv, extra in [
        (["plan", "placement", "--demand", demand], "plan"),
        (["site", "run", "--pop", "nyc1", "--fleet", str(SMALL_FLEET), "--backend", "llamacpp",
          "--gguf", str(tmp_path / "model.gguf"), "--no-report"], "llamacpp"),
    ]:  # fmt: skip
        done = run(tmp_path, "-m", "edgeplane", *argv)
        assert done.returncode == 2, (argv, done.stdout, done.stderr)
        assert f"needs edgeplane's `{extra}` extra" in done.stderr and f"edgeplane[{extra}]" in done.stderr
        assert "Traceback" not in done.stderr


def test_the_speaker_says_it_needs_the_bgp_extra(tmp_path: Path) -> None:
    code = (
        "import asyncio, pathlib, tempfile\n"
        "from edgeplane._extras import MissingExtra\n"
        "from edgeplane.speaker import ExaBgp\n"
        "speaker = ExaBgp(pathlib.Path(tempfile.mkdtemp()), [], local_asn=64496, router_id='192.0.2.1',\n"
        "                 local_address=None, on_event=print)\n"
        "try:\n"
        "    asyncio.run(speaker.start())\n"
        "except MissingExtra as missing:\n"
        "    print(missing)\n"
    )
    done = run(tmp_path, "-c", code)
    assert "needs edgeplane's `bgp` extra" in done.stdout, (done.stdout, done.stderr)
