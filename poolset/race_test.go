//go:build race

package poolset_test

const raceEnabled = true
