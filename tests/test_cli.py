"""The CLI as a person reads it: the console is injected, so a test sees exactly what would be printed."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from edgeplane.cli import cli
from edgeplane.control import ControlPlane, FleetState, SQLiteStore
from edgeplane.fleet import default_fleet_text, load_default_fleet
from tests.conftest import free_port, serving


def run(*args: str) -> tuple[int, str, str]:
    """The exit code, what a person sees on the terminal (answers and errors, as they interleave there) and
    click's own output."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=160, color_system=None)
    result = CliRunner().invoke(cli, list(args), obj={"console": console, "error_console": console})
    return result.exit_code, buffer.getvalue(), result.output


def edgeplane(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI as a real process, its stdout and stderr apart."""
    return subprocess.run(
        [sys.executable, "-m", "edgeplane", *args], capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_fleet_check_accepts_the_default_and_names_problems(tmp_path: Path) -> None:
    good = tmp_path / "fleet.yaml"
    good.write_text(default_fleet_text())
    code, shown, _ = run("fleet", "check", str(good))
    assert code == 0 and "ok (9 metros, 10 PoPs, 20 units, 3 models)" in shown

    bad = tmp_path / "bad.yaml"
    bad.write_text(default_fleet_text().replace("    region: eu-central\n", "    region: eu-centrl\n"))
    code, shown, _ = run("fleet", "check", str(bad))
    assert code == 2
    line = next(i for i, text in enumerate(bad.read_text().splitlines(), 1) if "eu-centrl" in text)
    assert f"{bad}:{line}: metros[8].region: unknown region 'eu-centrl'" in shown


def test_a_fleet_file_that_is_not_utf8_is_refused_naming_it_by_every_command(tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_bytes(b"\xff\xfe")
    demand = str(Path(__file__).parent / "data" / "demand.csv")
    for args in (["fleet", "check", str(path)], ["fleet", "show", "--fleet", str(path), "--json"],
                 ["plan", "placement", "--fleet", str(path), "--demand", demand]):  # fmt: skip
        done = edgeplane(*args)
        assert done.returncode == 2 and done.stdout == "", (args, done.stdout, done.stderr)
        assert f"{path}:0: (file): not UTF-8 (byte 0: invalid start byte)" in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr


def test_fleet_show_tables_and_json() -> None:
    code, shown, _ = run("fleet", "show")
    assert code == 0 and "nyc (New York)" in shown and "llama-3.1-405b-instruct" in shown
    code, _, output = run("fleet", "show", "--json")
    data = json.loads(output)
    assert [m["code"] for m in data["metros"]][:2] == ["nyc", "iad"]
    assert data["metros"][0]["continent"] == "na"


def test_commands_explain_an_unreachable_control_plane() -> None:
    code, shown, _ = run("--control", f"http://127.0.0.1:{free_port()}", "status")
    assert code == 1 and "cannot reach the control plane" in shown


def test_every_failure_of_the_control_plane_is_said_one_way() -> None:
    """Unreachable, an HTTP error with the server's OpenAI-style message, an answer that is not JSON: whichever
    command met it, `error: ...` on its console and exit 1."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Answers(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/api/keys":
                body, status = b'{"error": {"message": "admin token required", "type": "auth"}}', 401
            else:
                body, status = b"<html>a proxy's page</html>", 200
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answers)
    threading.Thread(target=server.serve_forever).start()
    url, nowhere = f"http://127.0.0.1:{server.server_address[1]}", f"http://127.0.0.1:{free_port()}"
    try:
        for control, args, said in (
            (url, ["keys", "list", "--json"], "error: control plane answered 401: admin token required"),
            (url, ["status"], f"error: the control plane at {url} answered /api/status with no JSON"),
            (url, ["bgp", "status"], f"error: the control plane at {url} answered /api/bgp with no JSON"),
            (nowhere, ["bgp", "status"], f"error: cannot reach the control plane at {nowhere}"),
            (nowhere, ["plan", "growth"], f"observed demand: cannot reach the control plane at {nowhere}"),
        ):
            code, shown, output = run("--control", control, *args)
            assert code == 1 and shown.startswith("error: ") and said in shown, (args, shown, output)
            assert "Traceback" not in output
    finally:
        server.shutdown()
        server.server_close()


async def test_errors_go_to_stderr_so_that_json_output_stays_json() -> None:
    """A refused command says why on stderr and exits 1; with --json, its stdout holds JSON or nothing."""
    state = FleetState(load_default_fleet(), SQLiteStore(":memory:"))
    async with serving(ControlPlane(state, admin_token="s3cret-admin", probe_interval_seconds=None)) as url:
        for token, args, said in (
            ("wrong", ["keys", "list", "--json"], "error: control plane answered 401: "),
            ("wrong", ["drain", "metro", "nyc", "--json"], "error: control plane answered 401: "),
            ("s3cret-admin", ["drain", "metro", "xxx", "--json"], "error: control plane answered 404: "),
        ):
            done = await asyncio.to_thread(edgeplane, "--control", url, *args, env={"EDGEPLANE_ADMIN_TOKEN": token})
            assert (done.returncode, done.stdout) == (1, ""), (args, done.stdout, done.stderr)
            assert done.stderr.startswith(said), (args, done.stderr)
        listed = await asyncio.to_thread(
            edgeplane, "--control", url, "keys", "list", "--json", env={"EDGEPLANE_ADMIN_TOKEN": "s3cret-admin"}
        )
        assert (listed.returncode, listed.stderr, json.loads(listed.stdout)) == (0, "", {"keys": []})


async def test_a_drill_that_moved_no_traffic_says_so() -> None:
    state = FleetState(load_default_fleet(), SQLiteStore(":memory:"))
    async with serving(ControlPlane(state, probe_interval_seconds=None)) as url:
        done = await asyncio.to_thread(edgeplane, "--control", url, "drill", "metro", "lon", "--duration", "0.2")
    assert "no moved traffic" in done.stdout and "None" not in done.stdout, (done.stdout, done.stderr)


def test_every_command_group_answers_help_by_either_entry_point() -> None:
    """`python -m edgeplane.cli` ran the CLI before the groups defined after its main() existed."""
    import subprocess
    import sys

    for module in ("edgeplane", "edgeplane.cli"):
        for group in ("unit", "plan", "bgp", "keys"):
            done = subprocess.run([sys.executable, "-m", module, group, "--help"], capture_output=True, text=True)
            assert done.returncode == 0 and "Usage:" in done.stdout, (module, group, done.stderr)


def test_an_error_of_a_service_at_start_is_said_without_a_traceback(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.conftest import SMALL_FLEET

    argv = ["site", "run", "--pop", "nyc1", "--fleet", str(SMALL_FLEET), "--backend", "llamacpp", "--no-report"]
    done = subprocess.run(
        [sys.executable, "-m", "edgeplane", *argv, "--gguf", str(tmp_path / "missing.gguf")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1 and "GGUF file not found" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0", "-1"])
def test_a_scale_that_is_not_a_finite_positive_number_is_refused(value: str) -> None:
    """NaN compares false with every bound: --scale nan planned with no demand, --scale inf printed NaN into --json."""
    demand = str(Path(__file__).parent / "data" / "demand.csv")
    for command in (
        ["plan", "scenarios", "--fast"],
        ["plan", "placement"],
        ["plan", "growth", "--horizon-months", "1"],
    ):
        code, _, output = run(*command, "--demand", demand, "--scale" if command[1] != "growth" else "--factor", value)
        assert code == 2 and ("--scale" in output or "--factor" in output), (command, output)


def test_a_placement_file_that_is_not_one_is_said_naming_it(tmp_path: Path) -> None:
    demand = str(Path(__file__).parent / "data" / "demand.csv")
    for content, said in (("root:x:0:0", "not JSON"), ('{"rows": []}', "no placement rows"), (b"\xff", "not UTF-8")):
        bad = tmp_path / "placement.json"
        bad.write_bytes(content if isinstance(content, bytes) else content.encode())
        code, shown, _ = run("plan", "scenarios", "--fast", "--demand", demand, "--placement", str(bad))
        assert code == 1 and f"error: {bad}: not a placement" in shown and said in shown, shown
