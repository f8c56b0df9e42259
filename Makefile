# Thin wrappers; scripts/test.sh is the source of truth for testing.

FUZZTIME ?= 30s

.PHONY: test run bench bench-proxy fuzz

# Whole suite: installs missing system packages (needs root), gofmt, vet,
# race tests, bounded fuzzing.
test:
	bash scripts/test.sh

# Demo proxy with its defaults.
run:
	go run ./cmd/serverside

# Parser and client benchmarks (the client ones start a real nginx).
bench:
	GOMAXPROCS=2 go test -run '^$$' -bench . -benchmem ./parser/ ./poolset/
	GOMAXPROCS=2 go test -run '^$$' -bench BenchmarkClient -benchtime 20000x -count 3 ./bench/

# The demo proxy against nginx and haproxy under wrk (about 8 minutes;
# installs wrk, nginx and haproxy when missing). See docs/benchmarks.md.
bench-proxy:
	go run ./bench/proxybench

# Every Fuzz target, one at a time, for FUZZTIME each (make fuzz FUZZTIME=2m).
fuzz:
	FUZZTIME=$(FUZZTIME) bash scripts/test.sh fuzz
