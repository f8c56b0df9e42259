//go:build !race

package poolset_test

const raceEnabled = false
