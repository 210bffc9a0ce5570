"""One ``p2p-ledger node`` process: spawn, wait for its ready line, SIGKILL, stop, restart, logs.

Used by everything that runs real node processes: the demo (``cli/demo.py``), the real-mode
scenario runner (``harness/real.py``) and ``testing.LocalCluster``. A ``NodeProcess`` is a slot
that outlives its processes: its data directory and log files are kept across restarts.

* The command is ``sys.executable -m p2p_ledger node`` (no PATH needed); the child imports the
  same ``p2p_ledger`` as its parent, installed or not (PYTHONPATH names the folder holding it),
  and inherits no ``P2P_LEDGER_*`` variable (a cluster key comes only from ``args``).
* stdout and stderr go to files, one pair per run (``NAME.RUN.out`` / ``.err``), never pipes:
  nothing can fill up and block a node.
* ``start()`` polls the stdout file for ``ready ws://HOST:PORT NODE_ID`` with a deadline (a
  bounded poll of another process: it is not ours to signal us) and fails with the log's tail
  if the process exits or the deadline passes (killing it first, so a retry can take the data
  directory).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import trio

# why: a bound, not a wait (a ready node returns at once): six nodes started together on two
# cores busy with other work took over 20 s to print their ready lines (Python start-up included).
READY_TIMEOUT = 60.0
POLL = 0.05
# The folder that holds the p2p_ledger package.
PACKAGE_ROOT = Path(__file__).resolve().parents[2]


class NodeFailedToStart(RuntimeError):
    """A node process exited, or printed no ready line in time; the message has its log's end."""


def child_env() -> dict[str, str]:
    """The environment of a node process: ours, minus P2P_LEDGER_*, importing our p2p_ledger."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("P2P_LEDGER_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT),
                                                      env.get("PYTHONPATH")]))
    return env


@dataclass
class NodeProcess:
    """A node's data directory, seed URLs and flags; at most one running process at a time."""

    name: str  # also its --node-id
    data: Path
    logdir: Path
    peers: Sequence[str] = ()
    args: Sequence[str] = ()  # more flags: --no-discovery, --gossip-interval S, --cluster-key K
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""
    port: int = 0
    runs: int = 0
    logs: list[Path] = field(default_factory=list)  # stderr of every run, oldest first

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def base_command(self) -> list[str]:
        """``p2p-ledger node`` on this data directory with this id and ``args``."""
        return [sys.executable, "-m", "p2p_ledger", "node", "--data", str(self.data),
                "--node-id", self.name, *self.args]

    def command(self, listen: str) -> list[str]:
        """The full command line: ``base_command()``, where to listen, whom to dial."""
        return [*self.base_command(), "--listen", listen,
                *(arg for url in self.peers for arg in ("--peer", url))]

    async def start(self, listen: str = "127.0.0.1:0", timeout: float = READY_TIMEOUT) -> None:
        """Spawn a process on the data directory and return once it printed its ready line."""
        self.runs += 1
        self.logdir.mkdir(parents=True, exist_ok=True)
        stdout = self.logdir / f"{self.name}.{self.runs}.out"
        stderr = self.logdir / f"{self.name}.{self.runs}.err"
        self.logs.append(stderr)
        with open(stdout, "wb") as out, open(stderr, "wb") as err:  # the child keeps its fds
            self.proc = subprocess.Popen(self.command(listen), stdout=out, stderr=err,
                                         stdin=subprocess.DEVNULL, cwd=self.logdir,
                                         env=child_env())
        deadline = trio.current_time() + timeout
        while True:
            ready = [line for line in stdout.read_text(errors="replace").splitlines()
                     if line.startswith("ready ")]
            if ready:
                parts = ready[0].split()
                if len(parts) != 3 or parts[2] != self.name:
                    self.kill()
                    raise NodeFailedToStart(f"{self.name} printed an unexpected ready line: "
                                            f"{ready[0]!r}")
                self.url = parts[1]
                self.port = int(self.url.rsplit(":", 1)[1])
                return
            if self.proc.poll() is not None:
                raise NodeFailedToStart(f"{self.name} exited with status {self.proc.returncode}"
                                        f":\n{self.log_tail()}")
            if trio.current_time() > deadline:
                self.kill()
                raise NodeFailedToStart(f"{self.name} was not ready within {timeout:g}s:\n"
                                        f"{self.log_tail()}")
            await trio.sleep(POLL)

    async def restart(self, same_port: bool = False, attempts: int = 10) -> None:
        """Start again on the same data directory (SIGKILLing a running process first).

        ``same_port`` listens on the previous port again, retrying while it is still held."""
        self.kill()
        if not same_port:
            await self.start()
            return
        for attempt in range(attempts):
            try:
                await self.start(f"127.0.0.1:{self.port}")
                return
            except NodeFailedToStart:
                if attempt == attempts - 1:
                    raise
                await trio.sleep(0.5)  # the port is still held: try again shortly

    def kill(self) -> None:
        """SIGKILL: no BYE, no clean shutdown; whatever was committed is on disk."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (the clean way down) and wait; SIGKILL if it outlives ``timeout``."""
        stop_all([self], timeout)
        return self.returncode

    def log_text(self) -> str:
        """Everything this node wrote on stderr, across every run."""
        return "".join(p.read_text(errors="replace") for p in self.logs if p.exists())

    def log_tail(self, lines: int = 8) -> str:
        """The last lines of the latest run's stderr, each prefixed with the node's name ("" when
        it wrote nothing)."""
        try:
            text = self.logs[-1].read_text(errors="replace").splitlines()[-lines:]
        except (IndexError, OSError):
            return ""
        return "\n".join(f"  {self.name}| {line}" for line in text)


def stop_all(nodes: Iterable[NodeProcess], timeout: float = 5.0) -> None:
    """SIGTERM every running node, then SIGKILL whatever still runs after ``timeout`` in all."""
    running = [n for n in nodes if n.alive]
    for node in running:
        assert node.proc is not None
        node.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for node in running:
        assert node.proc is not None
        try:
            node.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            node.kill()
