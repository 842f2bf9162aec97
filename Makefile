# Shortcuts for the two commands in the README (which work without make too).
.PHONY: run test bench lint
run:
	./run
test:
	./test
bench:
	bin/setup --dev && .venv/bin/python bench/run.py
lint:
	bin/setup --dev && .venv/bin/ruff check . && .venv/bin/ruff format --check .
