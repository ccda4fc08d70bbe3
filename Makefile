# The two commands of the README: `make demo` and `make test`. Both set everything up first.
.PHONY: setup demo test schema clean

OUT ?= fileflow-out

setup:
	@scripts/bootstrap.sh

demo: setup
	.venv/bin/fileflow process tests/samples --out $(OUT)

test: setup
	.venv/bin/pytest

schema: setup
	.venv/bin/fileflow schema --output docs/manifest.schema.json

clean:
	rm -rf $(OUT) .pytest_cache
