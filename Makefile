# The two commands a newcomer needs: `make serve` and `make test` (see README.md).
.PHONY: setup setup-test serve test check bench

# What serving needs; the test tools come with setup-test (make test, make check).
setup:
	@bash scripts/setup.sh serve

setup-test:
	@bash scripts/setup.sh test

serve: setup
	.venv/bin/ggufd $(ARGS)

check: setup-test
	.venv/bin/ruff check ggufd tests
	.venv/bin/ruff format --check ggufd tests
	.venv/bin/mypy

test: setup-test
	.venv/bin/python -m pytest -q $(PYTEST_ARGS)

# The benchmark's peers (llama_cpp.server, llama-server) live in .bench-venv/ and
# .bench-build/, apart from .venv; the first bench-setup builds llama-server (10+ minutes).
.PHONY: bench-setup
bench-setup:
	@bash scripts/bench_setup.sh

bench: setup-test bench-setup
	.venv/bin/python -m ggufd.bench $(ARGS)

# ggufd against llama-server with its own defaults (issue 13's workloads, both test models).
.PHONY: bench-cpu
bench-cpu: setup-test
	@bash scripts/bench_setup.sh llama_server
	.venv/bin/python -m ggufd.bench.cpu $(ARGS)

# GPU builds (issue 6): ggufd with llama.cpp built for a backend, in .venv (replacing the
# CPU build `make setup` installed) or, for the tests, in a venv of its own. See
# scripts/install_backend.sh; `make setup-cpu` puts the default build back.
.PHONY: setup-cpu setup-vulkan setup-cuda vulkan-env
setup-cpu:
	@bash scripts/install_backend.sh cpu .venv

setup-vulkan:
	@bash scripts/install_backend.sh vulkan .venv

setup-cuda:
	@bash scripts/install_backend.sh cuda .venv

# The Vulkan build tests/gpu/test_vulkan.py runs on lavapipe (it makes it when missing).
vulkan-env:
	@bash scripts/install_backend.sh vulkan .venv-vulkan
