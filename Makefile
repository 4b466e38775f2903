# The two commands a newcomer needs; both install what they use first (fast when nothing changed).
.PHONY: setup demo test test-e2e lint

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/shoprec run --env local

lint: setup
	.venv/bin/ruff check lib jobs tests bench notebooks dags
	.venv/bin/ruff format --check lib jobs tests bench notebooks dags
	.venv/bin/mypy

test: lint
	.venv/bin/python -m pytest -m "not e2e" --durations=15

# The end-to-end tier: minutes per test (whole runs per runner, processes killed and re-run, the
# stream, a real Kafka broker).
test-e2e: setup
	.venv/bin/python -m shoprec.spark --fetch-jars --kafka
	.venv/bin/python -m pytest -m e2e --durations=15 $(PYTEST_ARGS)
