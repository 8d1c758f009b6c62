"""Start `qvl serve` in the background and stop it by PID: for the demo, tests and benchmarks.

The server runs exactly as a user would run it (`python -m launch.cli serve ...`), in its own
process group; `stop()` sends SIGTERM so it drains, then kills the group if it must.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx


class ServerHandle:
    def __init__(self, serve_args: list[str], *, port: int, host: str = "127.0.0.1",
                 api_key: str | None = None, log_path: str | os.PathLike | None = None,
                 env: dict[str, str] | None = None):
        self.serve_args = serve_args
        self.port = port
        self.host = host
        self.api_key = api_key
        self.log_path = Path(log_path) if log_path else None
        self.env = env or {}
        self.proc: subprocess.Popen | None = None
        self.ready_s: float | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ServerHandle:
        argv = [sys.executable, "-m", "launch.cli", "serve", "--host", self.host,
                "--port", str(self.port), *self.serve_args]
        out = open(self.log_path, "w") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        env = {**os.environ, **self.env}
        if self.api_key:
            env["QVL_API_KEY"] = self.api_key
        self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env,
                                     start_new_session=True,
                                     cwd=Path(__file__).resolve().parent.parent)
        return self

    def wait_ready(self, timeout: float = 600.0) -> float:
        t0 = time.monotonic()
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        with httpx.Client(timeout=5) as c:
            while time.monotonic() - t0 < timeout:
                if self.proc is None or self.proc.poll() is not None:
                    raise RuntimeError(f"qvl serve exited early (code {self.proc.returncode}); "
                                       f"log: {self.log_path}\n{self.log_tail()}")
                try:
                    if (c.get(f"{self.root_url}/health").status_code == 200 and
                            c.get(f"{self.base_url}/models", headers=headers).status_code == 200
                            and self._supervisor_ready()):
                        self.ready_s = time.monotonic() - t0
                        return self.ready_s
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"server not ready after {timeout} s; log: {self.log_path}\n"
                           f"{self.log_tail()}")

    def _supervisor_ready(self) -> bool:
        """qvl serve has seen the server answer too (it logs "ready in"), so it is past its
        start-up phase; without a log there is nothing to wait for."""
        if not self.log_path:
            return True
        try:
            return "[qvl] ready in" in self.log_path.read_text(errors="replace")
        except OSError:
            return False

    def log_tail(self, n: int = 40) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM (drain), wait, then SIGKILL the whole group. Returns qvl serve's exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        return self.proc.returncode

    def kill_hard(self) -> None:
        """Kill vLLM and the supervisor at once (SIGKILL, no drain): a crash, for tests.
        vLLM runs in its own process group below `qvl serve`, so kill that group first."""
        import subprocess as sp

        if self.proc is None:
            return
        children = sp.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True,
                          text=True).stdout.split()
        for pid in children:
            try:
                os.killpg(int(pid), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.stop(timeout=0)

    def __enter__(self) -> ServerHandle:
        self.start()
        self.wait_ready()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
