# Thin wrappers; scripts/test.sh is the source of truth for testing.

FUZZTIME ?= 30s

.PHONY: test run bench fuzz

# Whole suite: installs missing system packages (needs root), gofmt, vet,
# race tests, bounded fuzzing.
test:
	bash scripts/test.sh

# Demo proxy with its defaults.
run:
	go run ./cmd/serverside

# Parser benchmarks (client and proxy benchmarks will join here).
bench:
	go test -run '^$$' -bench . -benchmem ./parser/

# Every Fuzz target, one at a time, for FUZZTIME each (make fuzz FUZZTIME=2m).
fuzz:
	FUZZTIME=$(FUZZTIME) bash scripts/test.sh fuzz
