"""What a fresh registry exports (callctl/metrics.py): the process and platform metrics, the
build, the capacity (set at start-up and on SIGHUP reload), and names that carry units."""

from __future__ import annotations

import platform
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from testkit import REPO

import callctl
from callctl.config import Config, DaemonConfig
from callctl.daemon import Daemon
from callctl.metrics import Metrics, build_commit

SHA = "0123456789abcdef0123456789abcdef01234567"


def _families(registry: CollectorRegistry) -> dict[str, str]:
    """Metric family name -> type."""
    return {m.name: m.type for m in registry.collect()}


def test_fresh_registry_has_process_and_platform_metrics() -> None:
    r = CollectorRegistry()
    Metrics(r)
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total",
                 "process_open_fds", "process_max_fds", "process_start_time_seconds"):
        value = r.get_sample_value(name)
        assert value is not None and value > 0, name
    info = [s for m in r.collect() if m.name == "python_info" for s in m.samples]
    assert [s.labels["version"] for s in info] == [platform.python_version()]


def test_build_info_names_version_and_commit() -> None:
    r = CollectorRegistry()
    Metrics(r, commit="abc123def456")
    assert r.get_sample_value("callctl_build_info", {
        "version": callctl.__version__, "commit": "abc123def456"}) == 1
    info = [s for m in r.collect() if m.name == "callctl_build" for s in m.samples]
    assert len(info) == 1                                  # one series, bounded labels


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(),
                    reason="not a git checkout")
def test_build_commit_is_the_checkouts() -> None:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                          text=True, check=True).stdout.strip()
    assert build_commit() == head[:12]
    r = CollectorRegistry()
    Metrics(r)
    assert r.get_sample_value("callctl_build_info", {
        "version": callctl.__version__, "commit": head[:12]}) == 1


def test_build_commit_without_git(tmp_path: Path) -> None:
    assert build_commit(tmp_path) == "unknown"            # an installed package
    git = tmp_path / "co" / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    assert build_commit(git.parent) == "unknown"          # a branch with no commit yet
    (git / "packed-refs").write_text(f"# pack-refs with: peeled\n{SHA} refs/heads/main\n")
    assert build_commit(git.parent) == SHA[:12]
    (git / "refs" / "heads" / "main").write_text(SHA[::-1] + "\n")
    assert build_commit(git.parent) == SHA[::-1][:12]     # a loose ref wins
    (git / "HEAD").write_text(SHA + "\n")                 # detached
    assert build_commit(git.parent) == SHA[:12]
    (git / "HEAD").write_text("garbage\n")
    assert build_commit(git.parent) == "unknown"
    # a worktree: .git is a file naming its gitdir, refs live in the common dir
    wt = tmp_path / "wt"
    wt.mkdir()
    wtgit = git / "worktrees" / "wt"
    wtgit.mkdir(parents=True)
    (wt / ".git").write_text(f"gitdir: {wtgit}\n")
    (wtgit / "HEAD").write_text("ref: refs/heads/main\n")
    (wtgit / "commondir").write_text("../..\n")
    assert build_commit(wt) == SHA[::-1][:12]


def test_max_calls_at_start_and_on_reload(tmp_path: Path) -> None:
    r = CollectorRegistry()
    cfg = Config(daemon=DaemonConfig(max_calls=7, work_dir=str(tmp_path)))
    path = tmp_path / "callctl.toml"
    daemon = Daemon(cfg, Metrics(r), config_path=str(path), http=False)
    assert r.get_sample_value("callctl_max_calls") == 7
    path.write_text(f'[daemon]\nmax_calls = 12\nwork_dir = "{tmp_path}"\n')
    daemon.reload()
    assert daemon.cfg.daemon.max_calls == 12
    assert r.get_sample_value("callctl_max_calls") == 12
    path.write_text("[daemon]\nmax_calls = -1\n")         # refused: the gauge stays
    daemon.reload()
    assert r.get_sample_value("callctl_max_calls") == 12


def test_names_carry_units() -> None:
    """Histograms end in a unit (_seconds) or _ratio (a ratio of two like quantities, such
    as the real-time factors); every name starts with callctl_ (prometheus_client itself
    gives counters their _total)."""
    r = CollectorRegistry()
    m = Metrics(r)
    m.asr_rtf.labels(engine="vosk").observe(0.2)
    ours = {n: t for n, t in _families(r).items() if not n.startswith(("process_", "python_"))}
    assert all(n.startswith("callctl_") for n in ours), ours
    for name, kind in ours.items():
        if kind == "histogram":
            assert name.endswith(("_seconds", "_ratio")), name
    assert "callctl_asr_real_time_factor_ratio" in ours
    assert "callctl_tts_real_time_factor_ratio" in ours
    assert r.get_sample_value("callctl_asr_real_time_factor_ratio_count",
                              {"engine": "vosk"}) == 1
