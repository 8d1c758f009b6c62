"""Run vLLM's OpenAI-compatible server as a supervised child process.

`VllmProcess` is one vLLM API server in its own process group: its log is streamed with a
prefix and its tail kept for diagnosis. `Supervisor` is what `qvl serve` runs: pre-flight
checks, start, wait until `/health` and `/v1/models` answer, forward SIGINT/SIGTERM so vLLM
drains, and restart vLLM with backoff (a bounded number of times) when it dies while serving —
vLLM's API server exits on `EngineDeadError`, so a dead engine means a dead process here.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import tempfile
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import httpx

from launch.diagnose import explain_failure, preflight
from serving.settings import ServeSettings, build_vllm_args, build_vllm_env

# `vllm serve` (see launch/vllm_serve.py for why not the api_server module)
VLLM_COMMAND = ["-m", "launch.vllm_serve"]


class StartupError(RuntimeError):
    """vLLM could not be started; the message says why and what to do."""


def _say(msg: str, out: TextIO | None = None) -> None:
    print(f"[qvl] {msg}", file=out or sys.stderr, flush=True)


class VllmProcess:
    """One vLLM API server process, in its own process group (pgid == pid)."""

    def __init__(self, settings: ServeSettings, *, log_prefix: str = "[vllm] ",
                 log_out: TextIO | None = None, keep_lines: int = 400,
                 raw_args: list[str] | None = None):
        self.settings = settings
        self.raw_args = raw_args  # verbatim vLLM arguments instead of build_vllm_args(settings)
        self.log_prefix = log_prefix
        self.log_out = log_out or sys.stderr
        self.lines: collections.deque[str] = collections.deque(maxlen=keep_lines)
        self.proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self.served = False  # the HTTP server came up (clients may have been served)
        # serving/guard.py answers 503 to new requests once this file exists (drain)
        self.drain_file = Path(tempfile.gettempdir()) / f"qvl-drain-{os.getpid()}-{settings.port}"

    @property
    def command(self) -> list[str]:
        args = self.raw_args if self.raw_args is not None else build_vllm_args(self.settings)
        return [sys.executable, *VLLM_COMMAND, *args]

    def start(self) -> None:
        env = {**os.environ, **build_vllm_env(self.settings), "PYTHONUNBUFFERED": "1",
               "QVL_DRAIN_FILE": str(self.drain_file)}
        self.drain_file.unlink(missing_ok=True)
        self.lines.clear()
        self.served = False
        self.proc = subprocess.Popen(
            self.command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, text=True, errors="replace", bufsize=1,
            preexec_fn=_own_group_dies_with_parent)
        self._reader = threading.Thread(target=self._pump, daemon=True, name="vllm-log")
        self._reader.start()

    def _pump(self) -> None:
        assert self.proc and self.proc.stdout
        for line in self.proc.stdout:
            self.lines.append(line)
            if "Application startup complete" in line:
                self.served = True
            try:
                self.log_out.write(self.log_prefix + line)
                self.log_out.flush()
            except (ValueError, OSError):  # our own output was closed; keep draining the pipe
                pass

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def poll(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def is_ready(self, client: httpx.Client) -> bool:
        base = f"http://{_connect_host(self.settings.host)}:{self.settings.port}"
        headers = {"Authorization": f"Bearer {self.settings.api_key}"} if self.settings.api_key else {}
        try:
            if client.get(f"{base}/health", timeout=5).status_code != 200:
                return False
            return client.get(f"{base}/v1/models", headers=headers, timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout: float) -> float:
        """Block until the server answers; returns seconds waited. Raises StartupError."""
        t0 = time.monotonic()
        with httpx.Client() as client:
            while True:
                if self.poll() is not None:
                    self.join_log()
                    raise StartupError(explain_failure(self.lines, self.settings))
                if self.is_ready(client):
                    return time.monotonic() - t0
                if time.monotonic() - t0 > timeout:
                    self.kill()
                    raise StartupError(
                        f"vLLM did not become ready within {timeout:.0f} s; raise "
                        "--ready-timeout for large models or slow disks")
                time.sleep(0.5)

    def terminate(self) -> None:
        """Drain and stop: new requests get 503 from the guard at once, then SIGTERM makes vLLM
        finish the in-flight ones (up to --shutdown-timeout) and exit."""
        if self.proc and self.proc.poll() is None:
            self.drain_file.touch()
            self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """Kill the whole process group (API server, engine core, workers)."""
        if self.proc:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
            self.join_log()
        self.drain_file.unlink(missing_ok=True)

    def join_log(self) -> None:
        if self._reader:
            self._reader.join(timeout=5)


def _own_group_dies_with_parent() -> None:
    """In the child: a new session (so a terminal's Ctrl-C reaches only qvl, which forwards it)
    and, on Linux, SIGTERM when qvl itself dies, so a killed supervisor leaves no orphan server."""
    os.setsid()
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _connect_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


@dataclass
class RestartPolicy:
    max_restarts: int = 3
    backoff_s: float = 2.0
    backoff_max_s: float = 30.0
    healthy_reset_s: float = 600.0  # a run this long forgives earlier restarts

    def delay(self, attempt: int) -> float:
        return min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1))


class Supervisor:
    """`qvl serve`: start vLLM, keep it up, stop it cleanly. `run()` returns the exit code."""

    def __init__(self, settings: ServeSettings, *, policy: RestartPolicy | None = None,
                 ready_timeout: float = 900.0, out: TextIO | None = None):
        self.settings = settings
        self.policy = policy or RestartPolicy()
        self.ready_timeout = ready_timeout
        self.out = out or sys.stderr
        self.vllm = VllmProcess(settings, log_out=self.out)
        self.restarts = 0
        self._stop = threading.Event()

    def request_stop(self, signum: int | None = None, _frame=None) -> None:
        if not self._stop.is_set():
            name = signal.Signals(signum).name if signum else "stop"
            _say(f"{name}: draining vLLM (up to {self.settings.shutdown_timeout} s)", self.out)
        self._stop.set()
        self.vllm.terminate()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGTERM, self.request_stop)

    def run(self) -> int:
        problem = preflight(self.settings)
        if problem:
            _say(f"error: {problem}", self.out)
            return 2
        while True:
            try:
                self._start_once()
            except StartupError as e:
                if self._stop.is_set():
                    return 0
                if self.restarts == 0 and not self.vllm.served:  # never came up
                    _say(f"error: {e}", self.out)
                    return 1
                # it came up (a client may have been served before we polled) or it is a
                # restart: the engine died, so try again
                _say(f"vLLM exited unexpectedly: {e}", self.out)
            else:
                started = time.monotonic()
                code = self._watch()
                if self._stop.is_set():
                    _say("vLLM stopped", self.out)
                    return 0
                if time.monotonic() - started > self.policy.healthy_reset_s:
                    self.restarts = 0
                cause = explain_failure(self.vllm.lines, self.settings)
                _say(f"vLLM exited unexpectedly (exit code {code}): {cause}", self.out)
            self.vllm.kill()  # reap engine/worker leftovers of the dead server
            if self.restarts >= self.policy.max_restarts:
                _say(f"error: giving up after {self.restarts} restarts", self.out)
                return 1
            self.restarts += 1
            delay = self.policy.delay(self.restarts)
            _say(f"restarting vLLM ({self.restarts}/{self.policy.max_restarts}) in {delay:.0f} s",
                 self.out)
            if self._stop.wait(delay):
                return 0

    def _start_once(self) -> None:
        _say("starting vLLM: " + " ".join(_redact(self.vllm.command)), self.out)
        self.vllm.start()
        waited = self.vllm.wait_ready(self.ready_timeout)
        _say(f"ready in {waited:.1f} s: {self.settings.base_url} "
             f"(model name {self.settings.name!r})", self.out)

    def _watch(self) -> int:
        """Wait for vLLM to exit; on a stop request give it the drain time, then kill."""
        proc = self.vllm.proc
        assert proc is not None
        while proc.poll() is None:
            if self._stop.wait(0.5):
                try:
                    proc.wait(timeout=self.settings.shutdown_timeout + 15)
                except subprocess.TimeoutExpired:
                    _say("vLLM did not stop in time; killing it", self.out)
                break
        self.vllm.kill()
        return proc.returncode


def _redact(argv: list[str]) -> list[str]:
    out, hide = [], False
    for a in argv:
        out.append("***" if hide else a)
        hide = a == "--api-key"
    return out
