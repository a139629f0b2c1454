"""``trustpod pod run|list|logs|exec|delete``: Kubernetes Pods in their own pod VMs.

Thin handlers over ``trustpod.pod``: the runner prints each step with its timing (on a terminal
with a live line for the running step, ``trustpod.cli.progress``; ``--no-progress`` turns it
off); state lives in the pod store (``--store``, ``$TRUSTPOD_POD_STORE``, ``[pod] store``) so a
second shell sees the pods. ``pod run`` follows the containers' logs until they exit; Ctrl-C
deletes the pod.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["register"]


def _ctx(args: argparse.Namespace) -> tuple[Any, Any]:
    from trustpod.pod.wiring import load_config, make_store

    config = load_config(args.config)
    return config, make_store(config, args.store)


def _step(label: str, seconds: float) -> None:
    from trustpod.cli.progress import plain_line

    sys.stderr.write(plain_line(label, seconds))
    sys.stderr.flush()


def _follow(store: Any, name: str, containers: list[str], *, follow: bool, prefix: bool) -> int:
    offsets = dict.fromkeys(containers, 0)
    status: dict[str, int] = {}
    while True:
        progressed = False
        for c in containers:
            path = store.log_path(name, c)
            try:
                with path.open("rb") as f:
                    f.seek(offsets[c])
                    data = f.read()
            except FileNotFoundError:
                data = b""
            if data:
                offsets[c] += len(data)
                progressed = True
                text = data.decode(errors="replace")
                if prefix:
                    lines = text.splitlines(keepends=True)
                    text = "".join(f"[{c}] {line}" for line in lines)
                sys.stdout.write(text)
                sys.stdout.flush()
            exit_path = path.with_suffix(".exit")
            if c not in status and exit_path.exists() and not data:
                status[c] = int(exit_path.read_text().strip() or "0")
        if not follow or len(status) == len(containers):
            return max(status.values(), default=0)
        if not progressed:
            time.sleep(0.05)


def _run(args: argparse.Namespace) -> int:
    from trustpod.cli.progress import StepProgress, Ticker
    from trustpod.pod.config import choose_provider
    from trustpod.pod.runner import RunOptions, delete_pod, run_pod
    from trustpod.pod.spec import parse_pod
    from trustpod.pod.wiring import make_provider

    config, store = _ctx(args)
    secrets = args.secrets.read_text() if args.secrets else None
    pod_text = Path(args.pod).read_text()
    pod = parse_pod(pod_text, secrets)
    local = sum(1 for r in store.list() if r.provider != "azure")
    name = choose_provider(config, args.provider or pod.runtime_class_provider(), local)
    provider = make_provider(name, config, store)
    policy = _policy(args.policy)
    options = RunOptions(
        kbs_url=args.kbs_url,
        kbs_cert=args.kbs_cert.read_text() if args.kbs_cert else None,
        policy=policy,
        pod_yaml=pod_text,
    )
    print(f"pod {pod.name}: provider {name}", file=sys.stderr, flush=True)
    progress = StepProgress(sys.stderr, time.monotonic, live=False if args.no_progress else None)
    with Ticker(progress):
        record = run_pod(pod, provider, store, options, progress.done, begin=progress.begin)
    if args.detach:
        print(record.name)
        return 0
    try:
        return _follow(store, pod.name, list(record.containers), follow=True, prefix=True)
    except KeyboardInterrupt:
        print(f"\ninterrupted: deleting pod {pod.name}", file=sys.stderr, flush=True)
        delete_pod(store, provider, pod.name)
        return 130


def _policy(value: str | None) -> str | None:
    if value is None:
        return None
    from trustpod.agent import policy_defaults

    if value == "generate":
        return value
    named = {
        "allow-all": policy_defaults.ALLOW_ALL,
        "allow-all-except-exec": policy_defaults.ALLOW_ALL_EXCEPT_EXEC_PROCESS,
    }
    return named.get(value) or Path(value).read_text()


def _list(args: argparse.Namespace) -> int:
    _, store = _ctx(args)
    print(f"{'NAME':24} {'PROVIDER':9} {'STATE':9} {'CONTAINERS':30} INITDATA")
    for r in store.list():
        names = ",".join(r.containers) or "-"
        print(f"{r.name:24} {r.provider:9} {r.state:9} {names:30} {r.initdata_digest[:16]}")
    return 0


def _logs(args: argparse.Namespace) -> int:
    config, store = _ctx(args)
    record = store.get(args.name)
    if args.console:
        return _console(config, store, record)
    names = [args.container] if args.container else list(record.containers)
    for c in names:
        if c not in record.containers:
            from trustpod.errors import NotFoundError

            raise NotFoundError(f"pod {args.name} has no container {c!r}", reason="pod.container")
    _follow(store, args.name, names, follow=args.follow, prefix=len(names) > 1)
    return 0


def _console(config: Any, store: Any, record: Any) -> int:
    """The pod VM's serial console (qemu) or console log (sandbox), whole."""
    from trustpod.errors import NotFoundError
    from trustpod.pod.wiring import make_provider

    provider = make_provider(record.provider, config, store)
    path_of = getattr(provider, "console_path", None)
    path = path_of(record.instance_id) if path_of is not None else None
    if path is None or not path.is_file():
        raise NotFoundError(
            f"pod {record.name} has no console log ({record.provider} provider)",
            reason="pod.console",
        )
    sys.stdout.write(path.read_text(errors="replace"))
    return 0


def _exec(args: argparse.Namespace) -> int:
    import secrets as _secrets

    from trustpod.pod.exec import exec_in_pod

    _, store = _ctx(args)
    record = store.get(args.name)
    container = args.container or next(iter(record.containers))
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    return exec_in_pod(record, container, cmd, _secrets.token_hex(8), sys.stdout.buffer)


def _delete(args: argparse.Namespace) -> int:
    from trustpod.pod.runner import delete_pod
    from trustpod.pod.wiring import make_provider

    config, store = _ctx(args)
    record = store.get(args.name)
    t = time.monotonic()
    delete_pod(store, make_provider(record.provider, config, store), args.name)
    _step(f"pod {args.name} deleted", time.monotonic() - t)
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("pod", help="run Kubernetes Pods in their own pod VMs")
    sub = parser.add_subparsers(dest="pod_cmd", metavar="SUBCOMMAND")
    sub.required = True

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", type=Path, help="pod config TOML ([pod], [sandbox], [azure])")
        p.add_argument("--store", type=Path, help="pod store directory")

    run = sub.add_parser("run", help="create the pod VM and run the pod's containers")
    run.add_argument("pod", help="Pod (or Deployment) YAML")
    run.add_argument("--provider", choices=("sandbox", "azure", "qemu"))
    run.add_argument("--kbs-url", help="the KBS the pod attests to (when no initdata annotation)")
    run.add_argument("--kbs-cert", type=Path, help="the KBS's TLS certificate (PEM)")
    run.add_argument("--secrets", type=Path, help="Secret/ConfigMap manifests (sealed values)")
    run.add_argument(
        "--policy",
        help="agent policy: generate (from the pod), allow-all, allow-all-except-exec, FILE.rego",
    )
    run.add_argument("-d", "--detach", action="store_true", help="return once running")
    run.add_argument(
        "--no-progress",
        action="store_true",
        help="plain step lines even on a terminal (no live line redrawn in place)",
    )
    common(run)
    run.set_defaults(func=_run)
    ls = sub.add_parser("list", help="the pods in the store")
    common(ls)
    ls.set_defaults(func=_list)
    logs = sub.add_parser("logs", help="a pod's container output")
    logs.add_argument("name")
    logs.add_argument("container", nargs="?")
    logs.add_argument("-f", "--follow", action="store_true")
    logs.add_argument("--console", action="store_true", help="the pod VM's serial console")
    common(logs)
    logs.set_defaults(func=_logs)
    ex = sub.add_parser("exec", help="run a command in a pod's container (policy permitting)")
    ex.add_argument("name")
    ex.add_argument("-c", "--container")
    ex.add_argument("cmd", nargs="+", help="the command, after --")
    common(ex)
    ex.set_defaults(func=_exec)
    rm = sub.add_parser("delete", help="delete the pod VM and forget the pod")
    rm.add_argument("name")
    common(rm)
    rm.set_defaults(func=_delete)
