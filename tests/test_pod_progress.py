"""``trustpod pod run``'s step progress: plain timed lines off a terminal (no escape codes), a live
line redrawn in place on one (fake clock + fake terminal; then the real CLI under a pty)."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

from trustpod.cli.progress import CLEAR_LINE, StepProgress, Ticker, plain_line, running_line


class FakeTerm:
    def __init__(self, tty: bool) -> None:
        self.tty = tty
        self.text = ""
        self.flushes = 0

    def write(self, text: str, /) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        self.flushes += 1

    def isatty(self) -> bool:
        return self.tty


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _drive(p: StepProgress, clock: FakeClock) -> None:
    p.begin("initdata")
    clock.now += 0.05
    p.done("initdata", 0.05)
    p.done("initdata digest sha256:ab", 0.0)
    p.begin("wait for the agent")
    clock.now += 1.25
    p.tick()
    p.done("a note while waiting", 0.0)
    clock.now += 1.0
    p.tick()
    p.done("wait for the agent", 2.25)


def test_not_a_terminal_prints_exactly_the_plain_lines() -> None:
    term, clock = FakeTerm(tty=False), FakeClock()
    p = StepProgress(term, clock)
    assert not p.live
    _drive(p, clock)
    assert "\x1b" not in term.text and "\r" not in term.text
    assert term.text == (
        plain_line("initdata", 0.05)
        + plain_line("initdata digest sha256:ab", 0.0)
        + plain_line("a note while waiting", 0.0)
        + plain_line("wait for the agent", 2.25)
    )
    assert plain_line("wait for the agent", 2.25) == "      2250 ms  wait for the agent\n"


def test_no_progress_on_a_terminal_is_plain() -> None:
    term, clock = FakeTerm(tty=True), FakeClock()
    _drive(StepProgress(term, clock, live=False), clock)
    assert "\x1b" not in term.text and "\r" not in term.text


def test_terminal_redraws_the_running_step_in_place() -> None:
    term, clock = FakeTerm(tty=True), FakeClock()
    p = StepProgress(term, clock)
    assert p.live
    _drive(p, clock)
    want = (
        CLEAR_LINE
        + running_line("initdata", 0.0, 0)
        + CLEAR_LINE
        + plain_line("initdata", 0.05)
        + plain_line("initdata digest sha256:ab", 0.0)  # no live line to erase
        + CLEAR_LINE
        + running_line("wait for the agent", 0.0, 0)
        + CLEAR_LINE
        + running_line("wait for the agent", 1.25, 1)  # tick: spinner frame + elapsed
        + CLEAR_LINE
        + plain_line("a note while waiting", 0.0)
        + CLEAR_LINE
        + running_line("wait for the agent", 1.25, 1)  # the live line comes back
        + CLEAR_LINE
        + running_line("wait for the agent", 2.25, 2)
        + CLEAR_LINE
        + plain_line("wait for the agent", 2.25)
    )
    assert term.text == want
    assert running_line("wait for the agent", 1.25, 1) == "  /     1.2 s  wait for the agent …"
    # every finished step ends on its own clean line; a tick with no running step draws nothing
    before = term.text
    p.tick()
    p.clear()
    assert term.text == before


def test_ticker_redraws_from_a_thread_and_clears_on_exit() -> None:
    term = FakeTerm(tty=True)
    p = StepProgress(term, time.monotonic)
    with Ticker(p, interval_s=0.01):
        p.begin("pull")
        time.sleep(0.2)
    assert term.text.count(CLEAR_LINE) >= 5
    assert term.text.endswith(CLEAR_LINE)  # interrupted step: the live line erased, nothing left
    off = FakeTerm(tty=False)
    with Ticker(StepProgress(off, time.monotonic), interval_s=0.01):
        time.sleep(0.05)
    assert off.text == ""


def _pty_run(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    main, child = pty.openpty()
    proc = subprocess.Popen(argv, stdin=child, stdout=child, stderr=child, env=env)
    os.close(child)
    out = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    os.close(main)
    return proc.wait(10), out.decode(errors="replace")


def test_pod_run_on_a_pty_draws_the_live_line(tmp_path: Path) -> None:
    pod = tmp_path / "pod.yaml"
    pod.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"
        "spec:\n  containers:\n  - {name: app, image: busybox}\n"
    )
    env = dict(os.environ, TRUSTPOD_POD_STORE=str(tmp_path / "store"))
    argv = [sys.executable, "-m", "trustpod.cli", "pod", "run", str(pod)]
    argv += ["--store", str(tmp_path / "store")]
    # no initdata annotation and no --kbs-url: the initdata step fails with the fix
    rc, out = _pty_run(argv, env)
    assert rc != 0
    assert CLEAR_LINE + running_line("initdata", 0.0, 0)[:12] in out, out
    assert "--kbs-url" in out
    rc, plain = _pty_run([*argv, "--no-progress"], env)
    assert rc != 0 and "--kbs-url" in plain
    assert "\x1b[K" not in plain, plain
    piped = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert piped.returncode != 0 and "\x1b" not in piped.stderr, piped.stderr
