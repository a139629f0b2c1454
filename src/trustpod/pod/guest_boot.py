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

from trustpod.errors import ConfigError, DependencyError, TrustpodError
from trustpod.pod.userdata import PEERPOD_DIR, provision_files, write_provisioned

__all__ = [
    "IMDS_USERDATA_URL",
    "USER_DATA_PATH",
    "VM_IP_ENV",
    "boot_argv",
    "fetch_userdata",
    "main",
]

USER_DATA_PATH = Path("/media/cidata/user-data")
#: Azure IMDS userData (CAA's process-user-data: ``Metadata: true``, base64 text).
IMDS_USERDATA_URL = (
    "http://169.254.169.254/metadata/instance/compute/userData?api-version=2021-01-01&format=text"
)
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


def fetch_userdata(
    path: Path,
    imds_url: str | None,
    *,
    timeout_s: float = 180.0,
    retry_s: float = 5.0,
) -> bytes:
    """CAA's provider choice: the config-drive file when present, else Azure IMDS (when
    ``imds_url``); retried every ``retry_s`` up to ``timeout_s`` (``--user-data-fetch-timeout``)."""
    import base64
    import binascii
    import time

    import httpx

    deadline = time.monotonic() + timeout_s
    last = "no user-data file and no IMDS configured"
    while True:
        if path.is_file():
            return path.read_bytes()
        if imds_url:
            try:
                r = httpx.get(imds_url, headers={"Metadata": "true"}, timeout=min(5.0, timeout_s))
                if r.status_code == 200:
                    return base64.b64decode(r.text.strip(), validate=True)
                last = f"IMDS answered {r.status_code}"
            except httpx.HTTPError as exc:
                last = f"IMDS unreachable: {exc}"
            except binascii.Error as exc:
                raise ConfigError(
                    f"IMDS userData is not base64: {exc}", reason="pod.userdata"
                ) from exc
        if time.monotonic() + retry_s > deadline:
            raise DependencyError(f"no userdata at {path} within {timeout_s:.0f} s ({last})")
        time.sleep(retry_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trustpod-pod-vm-boot")
    parser.add_argument("--root", type=Path, default=Path("/"))
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--user-data", type=Path, default=USER_DATA_PATH)
    parser.add_argument("--imds-url", default=None, help=f"e.g. {IMDS_USERDATA_URL}")
    parser.add_argument("--user-data-fetch-timeout", type=float, default=180.0)
    args = parser.parse_args(argv)
    try:
        userdata = fetch_userdata(
            args.user_data, args.imds_url, timeout_s=args.user_data_fetch_timeout
        )
        agent = boot_argv(args.root, args.image, userdata)
    except (OSError, TrustpodError) as exc:
        print(f"pod VM boot failed: {exc}", file=sys.stderr, flush=True)
        return 1
    # become the agent in this process (as exec would, without a second interpreter start)
    from trustpod.cli.main import main as trustpod_main

    return trustpod_main(agent[3:])


if __name__ == "__main__":
    raise SystemExit(main())
