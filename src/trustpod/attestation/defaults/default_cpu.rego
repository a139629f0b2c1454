package policy

import rego.v1

# trustpod default attestation policy for the `cpu` tee class (policy id "default_cpu").
#
# Output: `trust_claims`, an AR4SI trust vector (all eight claims), and `extensions`
# (`ear.trustee.identifiers`). Values follow draft-ietf-rats-ar4si: 2/3 are good,
# 32..95 "warning", 96..127 "contraindicated". The defaults below make an attestation that
# matches no rule "contraindicated" (hardware 97): reference values must be registered for a
# TEE to reach "affirming".
#
# `query_reference_value(id)` returns the registered reference value (usually a list) or null.
# A reference value may be a list of accepted values or one scalar: `rv_has` accepts both.

default executables := 33 # unrecognised executables

default hardware := 97 # hardware/firmware not recognised

default configuration := 36 # configuration unavailable to the verifier

default file_system := 0

default instance_identity := 0

default runtime_opaque := 0

default storage_opaque := 0

default sourced_data := 0

trust_claims := {
	"instance-identity": instance_identity,
	"configuration": configuration,
	"executables": executables,
	"file-system": file_system,
	"hardware": hardware,
	"runtime-opaque": runtime_opaque,
	"storage-opaque": storage_opaque,
	"sourced-data": sourced_data,
}

# -- helpers ---------------------------------------------------------------------------------

# v is one of the accepted values registered under id
rv_has(id, v) if {
	ref := query_reference_value(id)
	is_array(ref)
	v in ref
}

rv_has(id, v) if {
	ref := query_reference_value(id)
	ref != null
	not is_array(ref)
	ref == v
}

# a single registered number/string: the scalar itself or a one-element list
rv_one(id) := ref if {
	ref := query_reference_value(id)
	ref != null
	not is_array(ref)
}

rv_one(id) := ref[0] if {
	ref := query_reference_value(id)
	is_array(ref)
	count(ref) == 1
}

# -- sample (no hardware; tests only) --------------------------------------------------------

executables := 3 if {
	input.sample
	rv_has("launch_digest", input.sample.launch_digest)
}

hardware := 2 if {
	input.sample
	rv_has("svn", input.sample.svn)
	rv_has("major_version", input.sample.platform_version.major)
	input.sample.platform_version.minor >= rv_one("minimum_minor_version")
}

configuration := 2 if {
	input.sample
	input.sample.debug == false
}

# -- snp ---------------------------------------------------------------------------------------

executables := 3 if {
	input.snp
	rv_has("snp_launch_measurement", input.snp.measurement)
}

hardware := 2 if {
	input.snp
	rv_has("snp_bootloader", input.snp.reported_tcb_bootloader)
	rv_has("snp_microcode", input.snp.reported_tcb_microcode)
	rv_has("snp_snp_svn", input.snp.reported_tcb_snp)
	rv_has("snp_tee_svn", input.snp.reported_tcb_tee)
}

configuration := 2 if {
	input.snp
	input.snp.policy_debug_allowed == false
	input.snp.policy_migrate_ma == false
	rv_has("snp_smt_enabled", input.snp.platform_smt_enabled)
	rv_has("snp_tsme_enabled", input.snp.platform_tsme_enabled)
	rv_has("snp_guest_abi_major", input.snp.policy_abi_major)
	rv_has("snp_guest_abi_minor", input.snp.policy_abi_minor)
	rv_has("snp_single_socket", input.snp.policy_single_socket)
	rv_has("snp_smt_allowed", input.snp.policy_smt_allowed)
} else := 3 if {
	input.snp
	input.snp.policy_debug_allowed == false
	input.snp.policy_migrate_ma == false
}

# -- tdx ---------------------------------------------------------------------------------------

executables := 3 if {
	input.tdx
	rv_has("rtmr_1", input.tdx.quote.body.rtmr_1)
	rv_has("rtmr_2", input.tdx.quote.body.rtmr_2)
	tdx_kernel_ok
	tdx_kernel_params_ok
} else := 4 if {
	input.tdx
	rv_has("rtmr_1", input.tdx.quote.body.rtmr_1)
	rv_has("rtmr_2", input.tdx.quote.body.rtmr_2)
}

hardware := 2 if {
	input.tdx
	input.tdx.quote.header.tee_type == "81000000"
	input.tdx.quote.header.vendor_id == "939a7233f79c4ca9940a0db3957f0607"
	rv_has("mr_td", input.tdx.quote.body.mr_td)
	input.tdx.tcb_status == "UpToDate"
	input.tdx.collateral_expiration_status == "0"
}

configuration := 2 if {
	input.tdx
	input.tdx.td_attributes.debug == false
	rv_has("xfam", input.tdx.quote.body.xfam)
}

tdx_kernel_ok if {
	some event in input.tdx.uefi_event_logs
	event.type_name == "EV_EFI_BOOT_SERVICES_APPLICATION"
	"File(kernel)" in event.details.device_paths
	some d in event.digests
	rv_has("tdvfkernel", d.digest)
}

tdx_kernel_params_ok if {
	some event in input.tdx.uefi_event_logs
	event.type_name == "EV_EVENT_TAG"
	event.details.string == "LOADED_IMAGE::LoadOptions"
	some d in event.digests
	rv_has("tdvfkernelparams", d.digest)
}

# -- az-snp-vtpm (claims are strings / base64, see protocol §5.3) -------------------------------

executables := 3 if {
	input["az-snp-vtpm"]
	rv_has("measurement", input["az-snp-vtpm"].measurement)
	rv_has("snp_pcr11", input["az-snp-vtpm"].tpm.pcr11)
}

hardware := 2 if {
	input["az-snp-vtpm"]
	rv_has("tcb_bootloader", input["az-snp-vtpm"].reported_tcb_bootloader)
	rv_has("tcb_microcode", input["az-snp-vtpm"].reported_tcb_microcode)
	rv_has("tcb_snp", input["az-snp-vtpm"].reported_tcb_snp)
	rv_has("tcb_tee", input["az-snp-vtpm"].reported_tcb_tee)
}

configuration := 2 if {
	input["az-snp-vtpm"]
	rv_has("smt_enabled", input["az-snp-vtpm"].platform_smt_enabled)
	rv_has("tsme_enabled", input["az-snp-vtpm"].platform_tsme_enabled)
	rv_has("abi_major", input["az-snp-vtpm"].policy_abi_major)
	rv_has("abi_minor", input["az-snp-vtpm"].policy_abi_minor)
	rv_has("single_socket", input["az-snp-vtpm"].policy_single_socket)
	rv_has("smt_allowed", input["az-snp-vtpm"].policy_smt_allowed)
}

# -- az-tdx-vtpm -------------------------------------------------------------------------------

executables := 3 if {
	input["az-tdx-vtpm"]
	rv_has("tdx_pcr11", input["az-tdx-vtpm"].tpm.pcr11)
}

hardware := 2 if {
	input["az-tdx-vtpm"]
	input["az-tdx-vtpm"].quote.header.tee_type == "81000000"
	input["az-tdx-vtpm"].quote.header.vendor_id == "939a7233f79c4ca9940a0db3957f0607"
	rv_has("mr_td", input["az-tdx-vtpm"].quote.body.mr_td)
	input["az-tdx-vtpm"].tcb_status == "UpToDate"
}

configuration := 2 if {
	input["az-tdx-vtpm"]
	rv_has("xfam", input["az-tdx-vtpm"].quote.body.xfam)
}

# -- tpm (the AK is only trusted through the trusted_aks reference value) -----------------------

hardware := 2 if {
	input.tpm
}

executables := 3 if {
	input.tpm
	rv_has("tpm_pcr11", input.tpm.pcr11)
	rv_has("trusted_aks", input.tpm.ak_public)
}

configuration := 0 if {
	input.tpm
}

# -- extensions --------------------------------------------------------------------------------

# Workload identifiers bound through the initdata's agent policy.
extensions := [{
	"name": "ear.trustee.identifiers",
	"key": -18,
	"value": {"validated": validated_identifiers},
}]

validated_identifiers := object.union(container_images_id, container_uids_id)

container_images := [image |
	some container in input.init_data_claims.agent_policy_claims.containers
	image := container.OCI.Annotations["io.kubernetes.cri.image-name"]
]

container_uids := [uid |
	some container in input.init_data_claims.agent_policy_claims.containers
	uid := container.OCI.Process.User.UID
]

container_images_id := {"container_images": container_images} if {
	count(container_images) > 0
} else := {}

container_uids_id := {"container_uids": container_uids} if {
	count(container_uids) > 0
} else := {}
