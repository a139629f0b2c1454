"""Default attestation policies (§4.2 trust-vector semantics) and the policy input document."""

from __future__ import annotations

from typing import Any

import pytest

from trustpod.attestation.defaults import default_policy
from trustpod.attestation.ear import trust_vector_from_policy, vector_status
from trustpod.attestation.policy_input import build_policy_input
from trustpod.errors import VerificationError
from trustpod.rego import PolicyEngine

ENGINE = PolicyEngine()
RULES = ("trust_claims", "extensions")
CPU = default_policy("default_cpu")

SAMPLE = {
    "svn": "1",
    "launch_digest": "abcde",
    "platform_version": {"major": 1, "minor": 4},
    "debug": False,
}
SAMPLE_RV = {
    "launch_digest": ["abcde"],
    "svn": ["1"],
    "major_version": [1],
    "minimum_minor_version": [0],
}


def vector(doc: dict[str, Any], reference: dict[str, Any] | None = None) -> dict[str, int]:
    results = ENGINE.compile(CPU, RULES, {"reference": reference or {}}).evaluate_all(doc)
    return trust_vector_from_policy(results["trust_claims"])


def picks(vec: dict[str, int]) -> tuple[int, int, int]:
    return vec["executables"], vec["hardware"], vec["configuration"]


def test_all_eight_claims_and_defaults_contraindicated() -> None:
    vec = vector({"unknown-tee": {}})
    assert list(vec) == [
        "instance-identity",
        "configuration",
        "executables",
        "file-system",
        "hardware",
        "runtime-opaque",
        "storage-opaque",
        "sourced-data",
    ]
    assert picks(vec) == (33, 97, 36)
    assert vector_status(vec) == "contraindicated"


def test_sample_affirming_with_reference_values() -> None:
    vec = vector({"sample": SAMPLE}, SAMPLE_RV)
    assert picks(vec) == (3, 2, 2)
    assert vector_status(vec) == "affirming"


def test_sample_without_reference_values() -> None:
    vec = vector({"sample": SAMPLE})
    assert picks(vec) == (33, 97, 2)  # configuration needs no reference value
    assert vector_status(vec) == "contraindicated"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"launch_digest": ["other"]}, (33, 2, 2)),
        ({"svn": ["2"]}, (3, 97, 2)),
        ({"major_version": [2]}, (3, 97, 2)),
        ({"minimum_minor_version": [5]}, (3, 97, 2)),
        ({"minimum_minor_version": [4]}, (3, 2, 2)),
        # scalars are accepted as well as lists (kbs-client wraps scalars in a list)
        (
            {"launch_digest": "abcde", "svn": "1", "major_version": 1, "minimum_minor_version": 3},
            (3, 2, 2),
        ),
        ({"minimum_minor_version": [1, 2]}, (3, 97, 2)),  # ambiguous minimum: no match
    ],
)
def test_sample_branches(change: dict[str, Any], expected: tuple[int, int, int]) -> None:
    assert picks(vector({"sample": SAMPLE}, {**SAMPLE_RV, **change})) == expected


def test_sample_debug_configuration() -> None:
    vec = vector({"sample": {**SAMPLE, "debug": True}}, SAMPLE_RV)
    assert picks(vec) == (3, 2, 36)
    assert vector_status(vec) == "warning"


SNP = {
    "measurement": "aa" * 48,
    "reported_tcb_bootloader": 3,
    "reported_tcb_microcode": 209,
    "reported_tcb_snp": 20,
    "reported_tcb_tee": 0,
    "policy_debug_allowed": False,
    "policy_migrate_ma": False,
    "platform_smt_enabled": True,
    "platform_tsme_enabled": False,
    "policy_abi_major": 0,
    "policy_abi_minor": 31,
    "policy_single_socket": False,
    "policy_smt_allowed": True,
}
SNP_RV = {
    "snp_launch_measurement": ["aa" * 48],
    "snp_bootloader": [3],
    "snp_microcode": [209],
    "snp_snp_svn": [20],
    "snp_tee_svn": [0],
    "snp_smt_enabled": [True],
    "snp_tsme_enabled": [False],
    "snp_guest_abi_major": [0],
    "snp_guest_abi_minor": [31],
    "snp_single_socket": [False],
    "snp_smt_allowed": [True],
}


def test_snp_branches() -> None:
    assert picks(vector({"snp": SNP}, SNP_RV)) == (3, 2, 2)
    assert picks(vector({"snp": SNP})) == (33, 97, 3)  # else-branch: debug/migrate off
    assert picks(vector({"snp": {**SNP, "policy_debug_allowed": True}}, SNP_RV)) == (3, 2, 36)
    assert picks(vector({"snp": SNP}, {**SNP_RV, "snp_microcode": [210]})) == (3, 97, 2)


TDX = {
    "quote": {
        "header": {"tee_type": "81000000", "vendor_id": "939a7233f79c4ca9940a0db3957f0607"},
        "body": {"rtmr_1": "11", "rtmr_2": "22", "mr_td": "33", "xfam": "e7"},
    },
    "td_attributes": {"debug": False},
    "tcb_status": "UpToDate",
    "collateral_expiration_status": "0",
    "uefi_event_logs": [
        {
            "type_name": "EV_EFI_BOOT_SERVICES_APPLICATION",
            "details": {"device_paths": ["File(kernel)"]},
            "digests": [{"alg": "SHA-384", "digest": "kk"}],
        },
        {
            "type_name": "EV_EVENT_TAG",
            "details": {"string": "LOADED_IMAGE::LoadOptions"},
            "digests": [{"alg": "SHA-384", "digest": "pp"}],
        },
    ],
}
TDX_RV = {
    "rtmr_1": ["11"],
    "rtmr_2": ["22"],
    "mr_td": ["33"],
    "xfam": ["e7"],
    "tdvfkernel": "kk",
    "tdvfkernelparams": "pp",
}


def test_tdx_branches() -> None:
    assert picks(vector({"tdx": TDX}, TDX_RV)) == (3, 2, 2)
    grub = {k: v for k, v in TDX_RV.items() if not k.startswith("tdvf")}
    assert picks(vector({"tdx": TDX}, grub)) == (4, 2, 2)
    assert picks(vector({"tdx": {**TDX, "tcb_status": "OutOfDate"}}, TDX_RV)) == (3, 97, 2)
    assert picks(vector({"tdx": TDX})) == (33, 97, 36)


def test_az_snp_vtpm_branches() -> None:
    claims = {
        "measurement": "bWVhcw==",
        "tpm": {"pcr11": "ab"},
        "reported_tcb_bootloader": "3",
        "reported_tcb_microcode": "209",
        "reported_tcb_snp": "20",
        "reported_tcb_tee": "0",
        "platform_smt_enabled": "true",
        "platform_tsme_enabled": "false",
        "policy_abi_major": "0",
        "policy_abi_minor": "31",
        "policy_single_socket": "false",
        "policy_smt_allowed": "true",
    }
    rv = {
        "measurement": ["bWVhcw=="],
        "snp_pcr11": ["ab"],
        "tcb_bootloader": ["3"],
        "tcb_microcode": ["209"],
        "tcb_snp": ["20"],
        "tcb_tee": ["0"],
        "smt_enabled": ["true"],
        "tsme_enabled": ["false"],
        "abi_major": ["0"],
        "abi_minor": ["31"],
        "single_socket": ["false"],
        "smt_allowed": ["true"],
    }
    assert picks(vector({"az-snp-vtpm": claims}, rv)) == (3, 2, 2)
    assert picks(vector({"az-snp-vtpm": claims})) == (33, 97, 36)


def test_az_tdx_vtpm_branches() -> None:
    claims = {"tpm": {"pcr11": "ab"}, "quote": TDX["quote"], "tcb_status": "UpToDate"}
    rv = {"tdx_pcr11": ["ab"], "mr_td": ["33"], "xfam": ["e7"]}
    assert picks(vector({"az-tdx-vtpm": claims}, rv)) == (3, 2, 2)
    assert picks(vector({"az-tdx-vtpm": claims})) == (33, 97, 36)


def test_tpm_branches() -> None:
    claims = {"pcr11": "ab", "ak_public": "AK"}
    assert picks(vector({"tpm": claims}, {"tpm_pcr11": ["ab"], "trusted_aks": ["AK"]})) == (3, 2, 0)
    assert picks(vector({"tpm": claims}, {"tpm_pcr11": ["ab"]})) == (33, 2, 0)  # AK not trusted


def test_identifiers_extension() -> None:
    containers = [
        {"OCI": {"Annotations": {"io.kubernetes.cri.image-name": "pause"}, "Process": {}}},
        {
            "OCI": {
                "Annotations": {"io.kubernetes.cri.image-name": "busybox"},
                "Process": {"User": {"UID": 1000}},
            }
        },
    ]
    doc = {
        "sample": SAMPLE,
        "init_data_claims": {"agent_policy_claims": {"containers": containers}},
    }
    ext = ENGINE.compile(CPU, RULES, {"reference": {}}).evaluate(doc, "extensions")
    assert ext == [
        {
            "name": "ear.trustee.identifiers",
            "key": -18,
            "value": {
                "validated": {"container_images": ["pause", "busybox"], "container_uids": [1000]}
            },
        }
    ]
    empty = ENGINE.compile(CPU, RULES, {"reference": {}}).evaluate({"sample": SAMPLE}, "extensions")
    assert empty[0]["value"] == {"validated": {}}


def test_gpu_default_is_contraindicated_without_claims() -> None:
    gpu = ENGINE.compile(default_policy("default_gpu"), RULES, {"reference": {}})
    vec = trust_vector_from_policy(gpu.evaluate({"nvidia": {}}, "trust_claims"))
    assert vector_status(vec) == "contraindicated"


def test_policy_input_shape() -> None:
    claims = {"svn": "1", "report_data": "cmQ=", "init_data": "aWQ=", "debug": False}
    runtime = {"nonce": "n", "tee-pubkey": {"kty": "EC"}, "additional-evidence": "{}"}
    doc = build_policy_input("sample", claims, runtime, {"a": "b"})
    assert doc == {
        "init_data": "aWQ=",
        "init_data_claims": {"a": "b"},
        "report_data": "cmQ=",
        "runtime_data_claims": runtime,
        "sample": {"svn": "1", "debug": False},
    }
    assert list(doc) == sorted(doc)
    assert claims["report_data"] == "cmQ="  # caller's dict untouched
    terse = build_policy_input("sample", claims, runtime, None, verbose=False)
    assert "additional-evidence" not in terse["runtime_data_claims"]
    bare = build_policy_input("snp", {"measurement": "m"}, runtime, {"a": "b"})
    assert bare == {"snp": {"measurement": "m"}}  # no report_data/init_data claims -> no lift


def test_policy_input_rejects_non_string_binding_claims() -> None:
    with pytest.raises(VerificationError):
        build_policy_input("x", {"report_data": 5}, None, None)
