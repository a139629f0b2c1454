"""``trustpod initdata``: write, digest and encode initdata documents (guest notes §1).

* ``new --kbs-url URL [--kbs-cert PEM] [--policy FILE] [--algorithm sha256] [-o FILE]`` writes a
  valid initdata TOML with ``aa.toml``, ``cdh.toml`` and ``policy.rego`` entries.
* ``digest FILE`` prints the hex digest (first line) and, for sha256, the PCR 8 value a vTPM has
  after the AA extends it (second line).
* ``annotation FILE`` prints ``base64(gzip(FILE))`` for ``io.katacontainers.config.hypervisor.
  cc_init_data``; ``annotation --decode FILE`` turns an annotation back into the TOML.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from trustpod.errors import ConfigError, EvidenceError

__all__ = ["DEFAULT_AGENT_POLICY", "build_initdata", "register"]

_URL = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+(/[A-Za-z0-9._~\-/]*)?")

#: Allows every agent request except exec and policy replacement (kata's allow-all.rego shape;
#: replace it with genpolicy output for production). ``policy_data`` stays last (trustee parses it).
DEFAULT_AGENT_POLICY = """package agent_policy

default AddARPNeighborsRequest := true
default AddSwapRequest := true
default CloseStdinRequest := true
default CopyFileRequest := true
default CreateContainerRequest := true
default CreateSandboxRequest := true
default DestroySandboxRequest := true
default ExecProcessRequest := false
default GetMetricsRequest := true
default GetOOMEventRequest := true
default GuestDetailsRequest := true
default ListInterfacesRequest := true
default ListRoutesRequest := true
default MemHotplugByProbeRequest := true
default OnlineCPUMemRequest := true
default PauseContainerRequest := true
default PullImageRequest := true
default ReadStreamRequest := true
default RemoveContainerRequest := true
default RemoveStaleVirtiofsShareMountsRequest := true
default ReseedRandomDevRequest := true
default ResumeContainerRequest := true
default SetGuestDateTimeRequest := true
default SetPolicyRequest := false
default SignalProcessRequest := true
default StartContainerRequest := true
default StartTracingRequest := true
default StatsContainerRequest := true
default StopTracingRequest := true
default TtyWinResizeRequest := true
default UpdateContainerRequest := true
default UpdateEphemeralMountsRequest := true
default UpdateInterfaceRequest := true
default UpdateRoutesRequest := true
default WaitProcessRequest := true
default WriteStreamRequest := true

policy_data := {"containers": []}
"""


def _toml_string(value: str) -> str:
    """A TOML string: literal multi-line when possible (readable), else tomli_w's basic form."""
    if "'''" not in value and "\r" not in value:
        return "'''\n" + value + ("" if value.endswith("\n") else "\n") + "'''"
    import tomli_w

    return tomli_w.dumps({"v": value}, multiline_strings=True).split("=", 1)[1].strip()


def build_initdata(
    kbs_url: str, *, kbs_cert: str | None, policy: str | None, algorithm: str = "sha256"
) -> str:
    """The initdata TOML text (validated by parsing it back)."""
    from trustpod.guest.config import parse_aa, parse_cdh
    from trustpod.initdata import InitData

    url = kbs_url.rstrip("/")
    if not _URL.fullmatch(url):
        raise ConfigError(f"--kbs-url {kbs_url!r} is not an http(s) URL", reason="initdata.url")
    aa = f'[token_configs.kbs]\nurl = "{url}"\n'
    cdh = (
        'socket = "unix:///run/confidential-containers/cdh.sock"\n'
        "credentials = []\n\n"
        f'[kbc]\nname = "cc_kbc"\nurl = "{url}"\n'
    )
    if kbs_cert:
        pem = kbs_cert.strip() + "\n"
        if '"""' in pem or "\\" in pem or "'''" in pem:
            raise EvidenceError("the KBS certificate is not a plain PEM", reason="initdata.cert")
        aa += f'cert = """\n{pem}"""\n'
        cdh += f'kbs_cert = """\n{pem}"""\n'
    parse_aa(aa, "initdata[aa.toml]")
    parse_cdh(cdh, "initdata[cdh.toml]")
    text = (
        f'algorithm = "{algorithm}"\nversion = "0.1.0"\n\n[data]\n'
        f'"aa.toml" = {_toml_string(aa)}\n\n'
        f'"cdh.toml" = {_toml_string(cdh)}\n\n'
        f'"policy.rego" = {_toml_string(policy or DEFAULT_AGENT_POLICY)}\n'
    )
    InitData.parse(text).claims()
    return text


def _read(path: str) -> bytes:
    try:
        return sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}", reason="cli.read") from exc


def _new(args: argparse.Namespace) -> int:
    cert = _read(args.kbs_cert).decode("utf-8") if args.kbs_cert else None
    policy = _read(args.policy).decode("utf-8") if args.policy else None
    text = build_initdata(args.kbs_url, kbs_cert=cert, policy=policy, algorithm=args.algorithm)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def _digest(args: argparse.Namespace) -> int:
    from trustpod.initdata import InitData, pcr8_after_extend

    doc = InitData.parse(_read(args.file))
    print(doc.digest.hex())
    if doc.algorithm == "sha256":
        print(f"pcr8 {pcr8_after_extend(doc.digest).hex()}")
    return 0


def _annotation(args: argparse.Namespace) -> int:
    from trustpod.initdata import InitData, decode_annotation, encode_annotation

    data = _read(args.file)
    if args.decode:
        raw = decode_annotation(data.decode("ascii", errors="replace"))
        InitData.parse(raw)
        sys.stdout.buffer.write(raw)
        return 0
    InitData.parse(data)
    print(encode_annotation(data))
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("initdata", help="initdata documents: new, digest, annotation")
    sub = parser.add_subparsers(dest="initdata_cmd", metavar="SUBCOMMAND")
    sub.required = True

    new = sub.add_parser("new", help="write an initdata TOML (aa.toml, cdh.toml, policy.rego)")
    new.add_argument("--kbs-url", required=True, help="KBS URL the pod attests to")
    new.add_argument("--kbs-cert", metavar="PEM", help="CA certificate of the KBS (HTTPS)")
    new.add_argument(
        "--policy",
        metavar="FILE",
        help="agent policy (Rego); default allow-all except exec and SetPolicy",
    )
    new.add_argument(
        "--algorithm",
        choices=("sha256", "sha384", "sha512"),
        default="sha256",
        help="digest algorithm (vTPM platforms need sha256)",
    )
    new.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    new.set_defaults(func=_new)

    digest = sub.add_parser("digest", help="hex digest (and PCR 8 value for sha256)")
    digest.add_argument("file", help="initdata TOML ('-' for stdin)")
    digest.set_defaults(func=_digest)

    ann = sub.add_parser("annotation", help="base64(gzip) pod annotation value, or --decode")
    ann.add_argument("file", help="initdata TOML, or the annotation with --decode ('-' = stdin)")
    ann.add_argument("--decode", action="store_true", help="annotation → TOML")
    ann.set_defaults(func=_annotation)
