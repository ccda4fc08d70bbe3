# The two commands of the README: `make demo` and `make test`. Both set everything up first.
.PHONY: setup demo test test-serial test-fast schema bench clean images test-images

OUT ?= fileflow-out

setup:
	@scripts/bootstrap.sh

demo: setup
	.venv/bin/fileflow process tests/samples --out $(OUT)

# The whole suite, its modules side by side on four pytest-xdist workers: a module (or a group of
# tests/conftest.py) per worker at a time, the four stack modules in two units of two
test: setup
	.venv/bin/pytest -n 4 --dist loadfile --no-loadscope-reorder

# The same suite in one process (what `make test` was until 2026-12-06: 26 minutes against 14-15)
test-serial: setup
	.venv/bin/pytest

# The quick tier to run while working: the import rule, every converter, the engine (isolation,
# mediator) and the CLI on the embedded default; no stack, no PostgreSQL, no Redis
FAST_TESTS = tests/test_architecture.py tests/test_contract.py tests/test_converters_archive.py \
	tests/test_converters_documents.py tests/test_converters_images.py tests/test_converters_media.py \
	tests/test_isolation.py tests/test_mediator.py tests/test_cli.py tests/test_storage.py
test-fast: setup
	.venv/bin/pytest -q $(FAST_TESTS)

schema: setup
	.venv/bin/fileflow schema --output docs/manifest.schema.json

# Issue 6's five measurements side by side (about 20 minutes on 2 cores; needs PostgreSQL at
# 127.0.0.1:5432): writes docs/benchmarks.md and bench/results.json. Bigger runs: BENCH_ARGS,
# e.g. make bench BENCH_ARGS="--rounds 5 --throughput-files 2000" (see bench/run_all.py --help).
BENCH_ARGS ?=
bench: setup
	nice -n 5 .venv/bin/python bench/run_all.py $(BENCH_ARGS)

# The images of docker/Dockerfile, built here without a registry (buildah, chroot isolation, vfs
# storage under .images/, a Debian bookworm base made by debootstrap and cached in
# .images/cache/): see docker/README.md. test-images builds them, runs a real step in each as its
# non-root user, prints their sizes and removes them (CI runs it after `make test`).
images:
	docker/images.sh build

test-images:
	docker/images.sh test

clean:
	rm -rf $(OUT) .pytest_cache
	docker/images.sh clean
