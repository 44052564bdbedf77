"""The benchmark still runs: its quick core measures every variant and writes results.json.

Timing is not asserted here (that is what `make bench` reports); only that the
bench code keeps working as the kit changes under it.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import bench.engine
import pytest
from bench.core import CORE_VARIANTS
from bench.run import Plan, main

from onbehalf.serve import EngineError


def test_quick_bench_core_measures_every_variant(tmp_path: Path) -> None:
    assert main(["--quick", "--only", "core", "--out", str(tmp_path)]) == 0

    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["core"]["stats"]) == set(CORE_VARIANTS)
    for variant in CORE_VARIANTS:
        assert results["core"]["samples_ms"][variant], f"no samples for {variant}"
    statuses = {t["name"]: t["status"] for t in results["targets"]}
    assert statuses["onbehalf-warm ≤ 1.05 × agent-floor"] in {"PASS", "FAIL"}
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "latency.png").stat().st_size > 0


def test_quick_bench_network_measures_five_servers_across_the_emulated_network(
    tmp_path: Path,
) -> None:
    assert main(["--quick", "--only", "network", "--rtt-ms", "10", "--out", str(tmp_path)]) == 0

    results = json.loads((tmp_path / "results.json").read_text())
    network = results["network"]
    assert network["rtt_ms"] == 10
    for name in ("cold discovery, 1 servers", "cold discovery, 5 servers",
                 "sessions only, 5 servers one by one"):
        assert network["stats"][name]["n"] > 0
    statuses = {t["name"]: t["status"] for t in results["targets"]}
    assert statuses["cold discovery, 5 servers ≤ 1.5 × 1 (10 ms RTT)"] in {"PASS", "FAIL"}


def test_the_engine_section_says_why_it_did_not_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    def no_venv(root: Path) -> Path:
        raise EngineError("no Aegra venv at /nowhere: run `make serve`")

    monkeypatch.setattr(bench.engine, "aegra_python", no_venv)
    assert main(["--quick", "--only", "engine", "--out", str(tmp_path)]) == 0

    printed = capsys.readouterr().out
    assert "engine section did not run: no Aegra venv at /nowhere" in printed
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["engine"] == {"skipped": "no Aegra venv at /nowhere: run `make serve`"}
    statuses = {t["name"]: t["status"] for t in results["targets"] if t["name"][:7] == "engine-"}
    assert len(statuses) == 4 and set(statuses.values()) == {"SKIPPED"}
    assert Plan.quick().engine is None and Plan.quick(engine=True).engine is not None
