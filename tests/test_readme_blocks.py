"""The README's shell blocks, run as written (one bash script, in a fresh directory).

Blocks run in README order so later ones use what earlier ones made (the KBS of the quick
start serves the guest and the image reference values). The only edits are the ones a reader
on this machine would make: free ports instead of 8080/8006, the vectors' real path instead of
``../shared/vectors``, no ``. .venv/bin/activate`` (PATH has this interpreter's bin/), and lines
with a ``<placeholder>`` skipped. Background jobs are killed at the end.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import vectors_root

REPO = Path(__file__).resolve().parents[1]
RUN = (
    "Quick start: a KBS and a guest",
    "Verify real evidence offline",
    "Guest side, initdata and sealed secrets",
    "dm-verity pod VM images",
)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def readme_blocks() -> dict[str, str]:
    """``## heading`` -> its first ```sh block."""
    out: dict[str, str] = {}
    heading = None
    text = (REPO / "README.md").read_text(encoding="utf-8")
    for m in re.finditer(r"^## ([^\n]+)$|^```sh\n(.*?)^```$", text, re.M | re.S):
        if m.group(1):
            heading = m.group(1).strip()
        elif heading is not None and heading not in out:
            out[heading] = m.group(2)
    return out


def _script(kbs_port: int, api_port: int) -> str:
    blocks = readme_blocks()
    missing = [h for h in RUN if h not in blocks]
    assert not missing, f"README lost its blocks {missing}"
    lines = ["set -euo pipefail", "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT"]
    for heading in RUN:
        lines.append(f"echo '### {heading}'")
        for line in blocks[heading].splitlines():
            if line.startswith(". .venv/bin/activate") or re.search(r"<[a-z-]+>", line):
                continue
            lines.append(line)
    script = "\n".join(lines) + "\n"
    script = script.replace("127.0.0.1:8080", f"127.0.0.1:{kbs_port}")
    script = script.replace("127.0.0.1:8006", f"127.0.0.1:{api_port}")
    return script.replace("../shared/vectors", str(vectors_root()))


def test_readme_blocks_run_as_written(tmp_path: Path) -> None:
    if not (vectors_root() / "trustee").is_dir():
        pytest.skip(f"Trustee vectors not found at {vectors_root()} (set TRUSTPOD_VECTORS)")
    for tool in ("curl", "bash"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (apt-get install {tool})")
    script = tmp_path / "readme.sh"
    script.write_text(_script(_port(), _port()))
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    work = tmp_path / "work"
    work.mkdir()
    # its own process group: on a timeout the KBS and the guest it started go too
    proc = subprocess.Popen(
        ["bash", str(script)],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=240)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    assert proc.returncode == 0, f"{out[-4000:]}\n--- stderr\n{err[-4000:]}"
    # quick start: the secret as base64, then as raw bytes in a 0600 file
    assert "bXkgc2VjcmV0" in out  # base64("my secret")
    fetched = work / "fetched.bin"
    assert fetched.read_bytes() == b"my secret"
    assert fetched.stat().st_mode & 0o777 == 0o600
    assert ": OK (HTTPS on 127.0.0.1:" in out  # kbs config check
    # offline verification printed claims, with no collateral import for Azure
    assert '"report_data": "6368616c6c656e6765"' in out
    # the guest fetched the secret through its local API
    assert "my secret" in out.split("### Guest side")[1]
    # dm-verity and the image
    assert (work / "image" / "manifest.json").is_file()
    assert "snp_pcr11" in out or '"payload"' in out
