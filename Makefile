# The two commands a newcomer needs (both set up whatever is missing first, and are idempotent):
#   make app    start the app on the bundled demo (http://127.0.0.1:8501)
#   make test   run the whole test suite (what CI runs)
.PHONY: app test setup lint

PORT ?= 8501

setup:
	scripts/setup.sh

app: setup
	.venv/bin/r2r app --port $(PORT)

test:
	scripts/setup.sh browser
	.venv/bin/python -m pytest
	.venv/bin/ruff check .

lint: setup
	.venv/bin/ruff check .
