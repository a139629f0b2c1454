package policy

import rego.v1

# trustpod default attestation policy for the `gpu` tee class (policy id "default_gpu").
# Rules read NVIDIA NRAS-style claims under input.nvidia, as upstream's default GPU policy. The
# local nvidia verifier adds the cert-chain ones only when OCSP is configured (ADR 1100); without
# them every GPU appraisal is "contraindicated" (install a policy over the local claims).

default executables := 33

default hardware := 97

default configuration := 36

trust_claims := {
	"instance-identity": 0,
	"configuration": configuration,
	"executables": executables,
	"file-system": 0,
	"hardware": hardware,
	"runtime-opaque": 0,
	"storage-opaque": 0,
	"sourced-data": 0,
}

hardware := 2 if {
	gpu := input.nvidia
	gpu["x-nvidia-gpu-attestation-report-cert-chain"]["x-nvidia-cert-status"] == "valid"
	gpu["x-nvidia-gpu-attestation-report-cert-chain"]["x-nvidia-cert-ocsp-status"] == "good"
	gpu["x-nvidia-gpu-attestation-report-parsed"] == true
	gpu["x-nvidia-gpu-attestation-report-signature-verified"] == true
	gpu["x-nvidia-gpu-arch-check"] == true
}

configuration := 2 if {
	gpu := input.nvidia
	gpu.secboot == true
	gpu.dbgstat == "disabled"
	gpu["x-nvidia-gpu-vbios-version"] in query_reference_value("allowed_vbios_versions")
	gpu["x-nvidia-gpu-driver-version"] in query_reference_value("allowed_driver_versions")
} else := 3 if {
	input.nvidia.secboot == true
	input.nvidia.dbgstat == "disabled"
}

extensions := []
