"""`trustpod image build --bootable` progress: plain timed lines off a terminal, live on one."""

from __future__ import annotations

import io
import re

from trustpod.cli.image_vm import _Steps
from trustpod.cli.progress import CLEAR_LINE


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_off_a_terminal() -> None:
    out = io.StringIO()
    with _Steps(out) as say:
        say("kernel linux-image-cloud-amd64")
        say("GPT disk")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and CLEAR_LINE not in out.getvalue()
    assert re.fullmatch(r"\[\s+\d+\.\d s\] kernel linux-image-cloud-amd64", lines[0])
    assert lines[1].endswith("] GPT disk")


def test_live_line_on_a_terminal_then_timed_lines() -> None:
    out = _Tty()
    with _Steps(out) as say:
        say("mmdebstrap rootfs")
        say("GPT disk")
    text = out.getvalue()
    assert CLEAR_LINE in text  # the running step was drawn in place
    finished = [ln for ln in text.split(CLEAR_LINE) if ln.endswith("\n")]
    assert any("ms  mmdebstrap rootfs" in ln for ln in finished)
    assert any("ms  GPT disk" in ln for ln in finished)
    assert text.endswith(("\n", CLEAR_LINE))  # nothing live left behind
