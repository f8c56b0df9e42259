//go:build race

package main

// raceEnabled reports that the race detector is on: netpoll's race build
// looks a connection's events up by fd number (parkLot.holdFresh).
const raceEnabled = true
