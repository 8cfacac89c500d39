# The two commands a newcomer needs: `make serve` and `make test` (see README.md).
.PHONY: setup serve test check bench

setup:
	@bash scripts/setup.sh

serve: setup
	.venv/bin/ggufd $(ARGS)

check: setup
	.venv/bin/ruff check ggufd tests
	.venv/bin/ruff format --check ggufd tests
	.venv/bin/mypy

test: setup
	.venv/bin/python -m pytest -q $(PYTEST_ARGS)

# The benchmark's peers (llama_cpp.server, llama-server) live in .bench-venv/ and
# .bench-build/, apart from .venv; the first bench-setup builds llama-server (10+ minutes).
.PHONY: bench-setup
bench-setup:
	@bash scripts/bench_setup.sh

bench: setup bench-setup
	.venv/bin/python -m ggufd.bench $(ARGS)
