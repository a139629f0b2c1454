"""Attestation agent: initdata binding (vTPM PCR 8 on the emulated CVM, mismatch stops the AA),
evidence, token caching, runtime measurement events (AAEL)."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import time
from typing import Any

import pytest

from trustpod._internal.b64 import b64url_encode
from trustpod.errors import ConfigError, EvidenceError, VerificationError
from trustpod.guest.aa import AAEL_TAG, AttestationAgent, ExtendResult, aael_event
from trustpod.guest.attesters.base import unsupported
from trustpod.guest.attesters.sample import SampleAttester
from trustpod.guest.config import parse_aa
from trustpod.guest.tee_key import TeeKeyPair
from trustpod.initdata import InitData, pcr8_after_extend

INITDATA = InitData.parse(b'version = "0.1.0"\nalgorithm = "sha256"\n[data]\n"x" = "y"\n')
AA_CFG = parse_aa(
    '[token_configs.kbs]\nurl = "https://kbs:8080"\n[eventlog_config]\nenable_eventlog = true\n'
)


class FakeClient:
    def __init__(self) -> None:
        self.tee_key = TeeKeyPair.generate_ec()
        self.calls = 0
        self.closed = False

    def get_token(self) -> str:
        self.calls += 1
        body = b64url_encode(json.dumps({"exp": int(time.time()) + 600}).encode())
        return f"e30.{body}.sig"

    def close(self) -> None:
        self.closed = True


class HostDataAttester(SampleAttester):
    """SNP-like: compares the digest with a fixed HOST_DATA."""

    tee = "snp"

    def __init__(self, host_data: bytes) -> None:
        super().__init__()
        self.host_data = host_data
        self.extended: list[tuple[bytes, int]] = []

    def bind_init_data(self, digest: bytes) -> None:
        if (digest + bytes(32))[:32] != self.host_data:
            raise VerificationError("HOST_DATA does not match", reason="snp.host_data")

    def extend_runtime_measurement(self, event_digest: bytes, register_index: int) -> None:
        raise unsupported(self.tee, "runtime measurement")


class RecordingAttester(SampleAttester):
    tee = "tpm"

    def __init__(self) -> None:
        super().__init__()
        self.extended: list[tuple[bytes, int]] = []

    def extend_runtime_measurement(self, event_digest: bytes, register_index: int) -> None:
        self.extended.append((event_digest, register_index))


def _aa(attester: Any, initdata: InitData | None = INITDATA) -> tuple[AttestationAgent, FakeClient]:
    client = FakeClient()
    seen: list[str | None] = []

    def factory(cfg: Any, att: Any, toml: str | None) -> Any:
        seen.append(toml)
        return client

    aa = AttestationAgent(attester, AA_CFG, initdata=initdata, client_factory=factory)
    aa._seen = seen  # type: ignore[attr-defined]
    return aa, client


def test_host_data_binding_match_and_mismatch() -> None:
    aa, _ = _aa(HostDataAttester(INITDATA.digest))
    aa.start()
    bad, _ = _aa(HostDataAttester(bytes(32)))
    with pytest.raises(VerificationError) as exc:
        bad.start()
    assert exc.value.reason == "aa.initdata_binding" and "inconsistent" in exc.value.message


def test_vtpm_binding_extends_pcr8_on_emulated_cvm() -> None:
    from trustpod.guest.emulator.cvm import EmulatedAzureCvm

    with EmulatedAzureCvm.create(backend="software") as cvm:
        aa, _ = _aa(cvm.attester())
        aa.start()
        assert cvm.initdata_pcr() == pcr8_after_extend(INITDATA.digest)
    sha384 = InitData.parse(b'version = "0.1.0"\nalgorithm = "sha384"\n')
    with EmulatedAzureCvm.create(backend="software") as cvm:
        aa, _ = _aa(cvm.attester(), sha384)
        with pytest.raises(VerificationError) as exc:
            aa.start()
        assert "sha256" in (exc.value.message + str(exc.value.fix))


def test_sample_binding_is_a_noop_and_evidence_is_raw() -> None:
    aa, _ = _aa(SampleAttester())
    aa.start()
    assert json.loads(aa.get_evidence(b"xxxx")) == {"svn": "1", "report_data": "eHh4eA=="}
    with pytest.raises(EvidenceError):
        aa.get_evidence(b"x" * 65)


def test_token_cached_and_sends_initdata() -> None:
    aa, client = _aa(SampleAttester())
    first = json.loads(aa.get_token("kbs"))
    second = json.loads(aa.get_token())
    assert first["token"] == second["token"] and client.calls == 2  # client caches by exp
    assert aa._seen == [INITDATA.raw.decode()]  # type: ignore[attr-defined]
    assert "BEGIN PRIVATE KEY" in first["tee_keypair"]
    with pytest.raises(ConfigError):
        aa.get_token("coco_as")
    aa.close()
    assert client.closed


def test_runtime_measurement_aael() -> None:
    event = aael_event("github.com/confidential-containers", "PullImage", '{"image":"x"}')
    tag, size = struct.unpack_from("<II", event)
    assert (
        tag == AAEL_TAG
        and event[8:] == b'github.com/confidential-containers PullImage {"image":"x"}'
    )
    assert size == len(event) - 8
    att = RecordingAttester()
    aa, _ = _aa(att)
    assert aa.extend_runtime_measurement("d", "op", "c") is ExtendResult.OK
    assert att.extended == [(hashlib.sha256(aael_event("d", "op", "c")).digest(), 17)]
    aa.extend_runtime_measurement("d", "op", "c", register_index=11)
    assert att.extended[-1][1] == 11
    snp, _ = _aa(HostDataAttester(INITDATA.digest))
    assert snp.extend_runtime_measurement("d", "op", "c") is ExtendResult.NOT_SUPPORTED
    with pytest.raises(EvidenceError):
        aa.extend_runtime_measurement("d", "op", "line\nbreak")
    off = AttestationAgent(att, parse_aa(""), client_factory=lambda *a: FakeClient())  # type: ignore[arg-type,return-value]
    assert off.extend_runtime_measurement("d", "op", "c") is ExtendResult.NOT_ENABLED
    with pytest.raises(ConfigError):
        off.get_token()
    assert base64.b64decode("eHh4eA==") == b"xxxx"


def test_real_snp_attester_host_data_mismatch_stops_aa(tmp_path: Any, verifier_data: Any) -> None:
    """The production SNP attester over a configfs-tsm directory returning a REAL report: an
    initdata whose digest is not the report's HOST_DATA stops the AA."""
    from trustpod.guest.attesters.snp import SnpAttester, SnpSettings
    from trustpod.guest.attesters.tsm import TsmReport

    report = (verifier_data / "snp/test-report.bin").read_bytes()

    def kernel(root: Any) -> Any:
        entry = root / "entry0"
        entry.mkdir(exist_ok=True)
        (entry / "provider").write_text("sev_guest\n")
        (entry / "generation").write_text("1\n")
        (entry / "outblob").write_bytes(report)
        return entry

    tsm = TsmReport("sev_guest", root=tmp_path, make_entry=kernel)
    aa, _ = _aa(SnpAttester(SnpSettings(tsm_root=tmp_path), tsm=tsm))
    with pytest.raises(VerificationError) as exc:
        aa.start()
    assert exc.value.reason == "aa.initdata_binding" and "HOST_DATA" in exc.value.message
