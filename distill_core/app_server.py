"""Start `streamlit run app.py` on a free loopback port and wait until it answers (benchmarks, browser tests).

The engine never needs this; it lives here so the browser test and bench/app_overhead.py start
the app the same way, and so does anyone scripting screenshots.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator
from urllib.request import urlopen

from .errors import UserError

__all__ = ["free_port", "running_app"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_app(app_dir: Path, env: dict[str, str], log: IO[str], extra_args: tuple[str, ...] = (),
                timeout: float = 90.0) -> Iterator[str]:
    """Yield the URL of the app in `app_dir`, bound to 127.0.0.1; stop it on exit.

    `env` is the app's whole environment (the caller decides what it inherits); output goes to `log`.
    """
    app_dir = Path(app_dir)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(app_dir / "app.py"), "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
         *extra_args], cwd=app_dir, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            try:
                if urlopen(f"{url}/_stcore/health", timeout=2).status == 200:
                    break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    log.flush()
                    raise UserError(f"streamlit did not start (exit code {proc.poll()}); see its log") from None
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
