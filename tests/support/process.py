"""Servers run as real processes by a test: wait until they answer, stop them afterwards."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable


def wait_answering(
    url: str,
    process: subprocess.Popen[bytes],
    *,
    timeout: float = 90,
    any_status: bool = False,
    failure: Callable[[str], str] = lambda why: why,
) -> None:
    """Wait until `url` answers 200 (any HTTP status with `any_status`); else fail the test.

    `failure` turns the reason into the test's message (e.g. with the process's log).
    """
    import pytest

    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            pytest.fail(failure(f"exited with status {process.returncode}"))
        if time.monotonic() > deadline:
            pytest.fail(failure(f"did not answer {url} within {timeout:g} s"))
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except urllib.error.HTTPError:
            if any_status:
                return
        except OSError:
            pass
        time.sleep(0.2)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate a server process, killing it if it does not exit within 15 s."""
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)
