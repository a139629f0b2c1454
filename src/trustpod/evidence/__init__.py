"""Pure parsers for TEE evidence (bytes in, frozen dataclasses out).

Modules: ``snp`` (SEV-SNP report) and ``snp_json`` (sev-crate JSON, ``snp`` evidence), ``tpm``
(TPMS_ATTEST, TPMT_SIGNATURE, TPM2B_PUBLIC), ``hcl`` (Azure HCL report), ``az`` (Azure vTPM
evidence v0/v1/v2), ``tdx``/``ccel``/``intel_pck`` (Intel). Every malformed input raises
``trustpod.errors.EvidenceError``.
"""

__all__: list[str] = []
