# Shortcuts for `sh run demo` and `sh run test` (the README's quick start needs no make).
.PHONY: demo test build

demo:
	sh run demo

test:
	sh run test

build:
	npm run --silent build
