# The two commands a newcomer needs; both install what they use first (fast when nothing changed).
.PHONY: setup demo test lint

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/shoprec run --env local

lint: setup
	.venv/bin/ruff check lib jobs tests bench notebooks dags
	.venv/bin/ruff format --check lib jobs tests bench notebooks dags
	.venv/bin/mypy

test: lint
	.venv/bin/python -m pytest --durations=15
