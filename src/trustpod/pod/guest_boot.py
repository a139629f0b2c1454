"""The pod VM's boot step: ``process-user-data provision-files``, then the agent (guest side).

``python -m trustpod.pod.guest_boot --root R --image I``: reads the userdata from
``/media/cidata/user-data`` (the config-drive channel of CAA's docker/byom/libvirt providers),
provisions ``R/run/peerpod/*`` (``trustpod.pod.userdata``), assembles the agent's config
directory ``R/run/peerpod/agent`` from the initdata plus the pod VM image ``I``
(``I/guest.toml``: the attester; ``I/pause/rootfs``; optional ``I/images``), and becomes
``trustpod agent serve`` (in this process) listening where ``apf.json`` says. Imports no
host-side code.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from trustpod.errors import ConfigError, TrustpodError
from trustpod.pod.userdata import PEERPOD_DIR, provision_files, write_provisioned

__all__ = ["USER_DATA_PATH", "VM_IP_ENV", "boot_argv", "main"]

USER_DATA_PATH = Path("/media/cidata/user-data")
#: The pod VM's own address (its NIC's IP; set by the sandbox "hypervisor"): an apf.json
#: listen address on every interface (``tcp:0.0.0.0:PORT``) binds this address instead.
VM_IP_ENV = "TRUSTPOD_POD_VM_IP"


def boot_argv(root: Path, image: Path, userdata: bytes) -> list[str]:
    """Provision and return the agent's argv."""
    result = provision_files(userdata)
    if result.initdata is None or result.daemon is None:
        raise ConfigError("userdata has no initdata or no apf.json", reason="pod.userdata")
    write_provisioned(result, root)
    peerpod = root / PEERPOD_DIR.lstrip("/")
    cfg = peerpod / "agent"
    cfg.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(cfg / "initdata.toml", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(result.initdata.raw)
    # the pod VM image's guest.toml (which attester this image has); else the userdata's
    own = image / "guest.toml"
    guest = own.read_bytes() if own.is_file() else (peerpod / "guest.toml").read_bytes()
    fd = os.open(cfg / "guest.toml", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(guest)
    (cfg / "pause").symlink_to(image / "pause")
    argv = [sys.executable, "-m", "trustpod.cli", "agent", "serve", "--config-dir", str(cfg)]
    listen = result.daemon.agent_listen
    own_ip = os.environ.get(VM_IP_ENV)
    if own_ip and listen.startswith("tcp:0.0.0.0:"):
        listen = f"tcp:{own_ip}:{listen.rpartition(':')[2]}"
    argv += ["--listen", listen]
    if (image / "images").is_dir():
        argv += ["--local-images", str(image / "images")]
    return argv


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trustpod-pod-vm-boot")
    parser.add_argument("--root", type=Path, default=Path("/"))
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--user-data", type=Path, default=USER_DATA_PATH)
    args = parser.parse_args(argv)
    try:
        agent = boot_argv(args.root, args.image, args.user_data.read_bytes())
    except (OSError, TrustpodError) as exc:
        print(f"pod VM boot failed: {exc}", file=sys.stderr, flush=True)
        return 1
    # become the agent in this process (as exec would, without a second interpreter start)
    from trustpod.cli.main import main as trustpod_main

    return trustpod_main(agent[3:])


if __name__ == "__main__":
    raise SystemExit(main())
