"""Child processes of the end-to-end suite: started in their own process group, logged to a file,
waited for with a deadline, and always stopped (by the fixtures' finalizers, and by atexit and a
SIGTERM/SIGHUP handler for whatever a finalizer did not reach).

Every failure to start raises `StartError` with the process's log tail: the suite fails loudly,
it never skips.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

# Every process started and not yet stopped, by pid.
_RUNNING: dict[int, "Proc"] = {}
_LOCK = threading.Lock()


class StartError(RuntimeError):
    """A process did not start, or did not become ready in time."""


class Proc:
    """One child process, the leader of its own process group (so that its children, if any, are
    stopped with it), its stdout and stderr in `log_path`."""

    def __init__(self, name: str, argv: list[str], log_path: Path, cwd: Path | None = None,
                 env: dict[str, str] | None = None):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "ab")
        self._log.write(f"$ {' '.join(self.argv)}\n".encode())
        self._log.flush()
        try:
            self.popen = subprocess.Popen(
                self.argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=self._log,
                stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as e:
            self._log.close()
            raise StartError(f"{name}: cannot start {self.argv[0]}: {e}") from e
        self.pid = self.popen.pid
        with _LOCK:
            _RUNNING[self.pid] = self

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as e:
            return f"(no log: {e})"
        return "\n".join(text.splitlines()[-lines:])

    def fail(self, why: str) -> StartError:
        state = "running" if self.alive() else f"exited with {self.popen.returncode}"
        return StartError(f"{self.name} (pid {self.pid}, {state}): {why}\n"
                          f"--- last lines of {self.log_path} ---\n{self.tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the process group, then SIGKILL after `timeout` seconds."""
        if self.alive():
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait(5)
        with _LOCK:
            _RUNNING.pop(self.pid, None)
        if not self._log.closed:
            self._log.close()

    def kill(self) -> None:
        """SIGKILL to the process group at once: the process dies without any clean-up of its
        own (open connections reset, nothing flushed), as in a crash or an OOM kill."""
        if self.alive():
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.popen.wait(5)
        self.stop()

    def wait_until(self, what: str, ready, timeout: float, interval: float = 0.05) -> None:
        """Polls `ready()` until it is true; raises with the log tail when the process exits or
        `timeout` seconds pass."""
        deadline = time.monotonic() + timeout
        last_error = None
        while True:
            if not self.alive():
                raise self.fail(f"exited before {what}")
            try:
                if ready():
                    return
            except Exception as e:  # noqa: BLE001 - any error means "not yet"
                last_error = e
            if time.monotonic() >= deadline:
                detail = f" (last error: {last_error!r})" if last_error else ""
                raise self.fail(f"not {what} after {timeout:.0f} s{detail}")
            time.sleep(interval)


def stop_all() -> None:
    """Stops every process still running (atexit, signals)."""
    with _LOCK:
        procs = list(_RUNNING.values())
    for proc in procs:
        try:
            proc.stop(timeout=5)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


def _on_signal(signum, _frame):
    stop_all()
    # Let pytest's own handling and the default action follow.
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


atexit.register(stop_all)
for _sig in (signal.SIGTERM, signal.SIGHUP):
    if signal.getsignal(_sig) in (signal.SIG_DFL, None):
        signal.signal(_sig, _on_signal)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the kernel's choice among its high ports)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port_closed(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while port_open(port):
        if time.monotonic() >= deadline:
            raise StartError(f"port {port} still accepts connections after {timeout:.0f} s")
        time.sleep(0.05)
