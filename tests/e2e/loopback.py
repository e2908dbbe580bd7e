"""Loopback Ray clusters for tests: ``ray start`` nodes on 127.0.0.1, each with its own
temp dir and free ports (never Ray's defaults, which a contributor's own Ray may hold),
the ``ray`` CLI run as a user would (jobs submitted with ``--working-dir``), and a stop
that ends this cluster's processes only (``ray stop`` would end every Ray on the machine,
the session's shared one included)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from helpers import REPO, free_port


def cluster_env() -> dict[str, str]:
    """The environment the nodes and the CLI run in: this interpreter's ``python`` first."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
           "RAY_AUTH_MODE": "disabled",  # a loopback test cluster; no token to distribute
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    return env


def ray_cli(*args: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    ray_bin = Path(sys.executable).with_name("ray")
    return subprocess.run([str(ray_bin), *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


@dataclass
class LoopbackCluster:
    """A head node started on loopback, and the nodes that joined it.

    Attributes:
        gcs: the head's GCS address (what ``ray start --address`` takes).
        dashboard: the head's dashboard URL (jobs and the state API).
        env: the environment of its CLI calls, ``RAY_ADDRESS`` set to the dashboard.
        temp_dirs: each node's temp dir (its processes name it on their command line).
        client_port: the head's Ray Client server port (that process names no temp dir).
    """

    gcs: str
    dashboard: str
    env: dict[str, str]
    temp_dirs: list[Path] = field(default_factory=list)
    client_port: int = 0

    @classmethod
    def start(cls, temp: Path, *args: str) -> LoopbackCluster:
        """``ray start --head`` with ``args`` (resources) on free ports."""
        gcs, dashboard = free_port(), free_port()
        cluster = cls(f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dashboard}",
                      {**cluster_env(), "RAY_ADDRESS": f"http://127.0.0.1:{dashboard}"},
                      client_port=free_port())
        cluster._start_node(temp, "--head", f"--port={gcs}", f"--dashboard-port={dashboard}",
                            "--dashboard-host=127.0.0.1",
                            f"--ray-client-server-port={cluster.client_port}", *args)
        return cluster

    def add_node(self, temp: Path, *args: str) -> None:
        """A second node on this machine, joining the head."""
        self._start_node(temp, f"--address={self.gcs}", *args)

    def _start_node(self, temp: Path, *args: str) -> None:
        self.temp_dirs.append(temp)
        env = {k: v for k, v in self.env.items() if k != "RAY_ADDRESS"}
        started = ray_cli("start", "--node-ip-address=127.0.0.1", f"--temp-dir={temp}",
                          f"--dashboard-agent-listen-port={free_port()}",
                          "--disable-usage-stats", *args, env=env)
        assert started.returncode == 0, started.stderr

    def stop(self, grace_s: float = 10) -> None:
        """End this cluster's processes: those whose command line names a node's temp dir
        (or is the head's Ray Client server), and their children (workers, agents)."""
        marks = [str(t) for t in self.temp_dirs] + [f"--port={self.client_port} --mode=proxy"]
        table = _processes()
        chosen = {pid for pid, (_, cmd) in table.items()
                  if any(m in cmd for m in marks) and pid not in (os.getpid(), os.getppid())}
        while more := {pid for pid, (ppid, _) in table.items() if ppid in chosen} - chosen:
            chosen |= more
        _signal(chosen, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and chosen & set(_processes()):
            time.sleep(0.2)
        _signal(chosen & set(_processes()), signal.SIGKILL)


def _processes() -> dict[int, tuple[int, str]]:
    """``pid -> (parent pid, command line)`` of every process (Linux ``/proc``)."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):  # gone meanwhile
            continue
        table[int(entry)] = (ppid, cmdline.decode(errors="replace"))
    return table


def _signal(pids: set[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def submit(cluster: LoopbackCluster, *command: str) -> str:
    """``ray job submit --no-wait --working-dir . -- <command>``; returns the job id."""
    deadline = time.monotonic() + 120
    while True:  # a just-started head takes a few seconds to have its job agent up
        submitted = ray_cli("job", "submit", "--no-wait", "--working-dir", ".", "--", *command,
                            env=cluster.env)
        if "No available agent" not in submitted.stderr or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert submitted.returncode == 0, submitted.stderr
    return re.search(r"raysubmit_\w+", submitted.stdout + submitted.stderr).group(0)


def wait_for_job(client, job_id: str, timeout_s: float = 900):
    deadline = time.monotonic() + timeout_s
    while not client.get_job_status(job_id).is_terminal() and time.monotonic() < deadline:
        time.sleep(2)
    return client.get_job_status(job_id), client.get_job_logs(job_id)
