# The README's quick start: `make demo` and `make test` (Debian bookworm, as root). Each installs what it needs.
.PHONY: setup build demo test bench

setup:
	sh scripts/setup.sh

build:
	npm run --silent build

demo: setup
	./bin/plexusctl demo

test: setup
	npm test
