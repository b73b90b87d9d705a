"""`--html` writes one self-contained report per plan command, with its plots as inline SVG."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from pathlib import Path

from click.testing import CliRunner

from edgeplane.cli import cli

DEMAND = Path(__file__).resolve().parent.parent / "data" / "demand.csv"


def svg_of(path: Path) -> ElementTree.Element:
    text = path.read_text()
    assert "<script" not in text and "http://" not in text.split("<svg", 1)[0]  # no network, no scripts
    return ElementTree.fromstring(text[text.index("<svg") : text.index("</svg>") + 6])


def test_each_plan_command_writes_an_html_report_with_its_plot(tmp_path: Path) -> None:
    runner = CliRunner()
    placement, scenarios, growth = tmp_path / "placement.html", tmp_path / "scenarios.html", tmp_path / "growth.html"
    result = runner.invoke(cli, ["plan", "placement", "--demand", str(DEMAND), "--html", str(placement)])
    assert result.exit_code == 0, result.output
    assert "GPUs placed per PoP" in placement.read_text() and svg_of(placement) is not None
    result = runner.invoke(cli, ["plan", "scenarios", "--demand", str(DEMAND), "--html", str(scenarios)])
    assert result.exit_code == 0, result.output
    text = scenarios.read_text()
    assert "utilisation per metro, per scenario" in text and "metro lon" in text and svg_of(scenarios) is not None
    args = ["--demand", str(DEMAND), "--factor", "2", "--horizon-months", "6", "--step-months", "3"]
    result = runner.invoke(cli, ["plan", "growth", *args, "--html", str(growth)])
    assert result.exit_code == 0, result.output
    assert "unit orders" in growth.read_text() and svg_of(growth) is not None
