//go:build race

package refresh

// raceDetector reports whether the tests run with the race detector.
const raceDetector = true
