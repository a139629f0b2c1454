# trustpod developer entry points. Everything runs from .venv; `make test` installs what it needs.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Debian packages the tests drive for real (swtpm/tpm2 for vTPM, veritysetup for dm-verity,
# squashfs/e2fs for images, redis/postgres for replica backends, wrk for load).
APT_PKGS := swtpm swtpm-tools tpm2-tools libtss2-dev pkg-config cryptsetup-bin squashfs-tools \
            e2fsprogs redis-server postgresql wrk busybox-static cpio time prometheus runc \
            docker-registry skopeo gnupg gpgv curl \
            qemu-system-x86 qemu-utils mmdebstrap fdisk
EXTRAS := server,verifiers,guest,backends,pods,dev,podvm
export TRUSTPOD_VECTORS ?= $(abspath ../shared/vectors)

.PHONY: all venv protos sysdeps lint typecheck test demo demo-encrypted demo-vm bench bench-replicas image-test clean

all: test

sysdeps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml | sysdeps
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	@touch $(STAMP)

venv: sysdeps $(STAMP) protos

# Compile the agent's .proto files to a descriptor set (ADR 0900); trustpod compiles on first
# use into a cache dir when this has not run.
protos: $(STAMP)
	$(BIN)/python -m trustpod.agent.pb

lint: venv
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: venv
	$(BIN)/mypy src

test: venv lint typecheck
	$(BIN)/pytest -q -p no:cacheprovider

demo: venv
	$(BIN)/python -m trustpod.demo

demo-encrypted: venv
	$(BIN)/python -m trustpod.demo_encrypted

bench: venv
	$(BIN)/python -m benchmarks.run

bench-replicas: venv
	$(BIN)/python -m benchmarks.bench_replicas

# the full Debian pod VM under QEMU TCG (cold image build: minutes; cached by input digest)
test-vm: venv
	TRUSTPOD_VM_FULL=1 $(BIN)/pytest -q -p no:cacheprovider -s tests/test_pod_qemu.py tests/test_pod_qemu_attest.py tests/test_image_vm_boot.py

# make demo's confidential pod in a real pod VM (qemu provider, TCG), each step timed
demo-vm: venv
	$(BIN)/python -m trustpod.pod.demo_vm

bench-vm: venv
	$(BIN)/python benchmarks/bench_pod_vm.py --cold

# builds the Containerfile with podman and runs it read-only (needs the base image locally)
image-test: venv
	TRUSTPOD_IMAGE_BUILD=1 $(BIN)/pytest -q tests/test_deploy.py -k image

clean:
	rm -rf $(VENV) build dist .mypy_cache .ruff_cache .pytest_cache
