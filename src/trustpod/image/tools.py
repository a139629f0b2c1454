"""Running the host tools an image build needs (mmdebstrap, apt, mksquashfs, ...) — I/O edge.

One place for what every build step expects of a tool: present on ``PATH`` (or given as a file),
else ``image.tool_missing`` with the package to install; bounded by a timeout; a non-zero exit is
``image.tool_failed`` quoting the last lines it printed.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from trustpod.errors import DependencyError

__all__ = ["run_tool"]

log = logging.getLogger(__name__)


def run_tool(
    argv: list[str],
    *,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    package: str = "",
    tail_lines: int = 3,
) -> str:
    """Run ``argv`` to completion and return its stdout; ``DependencyError`` otherwise."""
    if shutil.which(argv[0]) is None and not Path(argv[0]).is_file():
        raise DependencyError(
            f"{argv[0]} is not installed",
            reason="image.tool_missing",
            fix=f"apt-get install {package}" if package else "",
        )
    log.info("running %s", " ".join(argv))
    try:
        res = subprocess.run(
            argv,
            cwd=cwd,
            env=None if env is None else dict(env),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise DependencyError(f"{argv[0]} timed out", reason="image.tool_failed") from exc
    if res.returncode:
        tail = " | ".join((res.stderr or res.stdout).strip().splitlines()[-tail_lines:])
        raise DependencyError(
            f"{' '.join(argv)} failed (exit {res.returncode}): {tail}", reason="image.tool_failed"
        )
    return res.stdout
