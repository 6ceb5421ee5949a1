package main

import (
	crand "crypto/rand"
	"encoding/binary"
	"math/rand/v2"
)

// newRand returns a jitter source seeded from the system's random source.
func newRand() *rand.Rand {
	var seed [16]byte
	_, _ = crand.Read(seed[:])
	return rand.New(rand.NewPCG(binary.LittleEndian.Uint64(seed[:8]), binary.LittleEndian.Uint64(seed[8:])))
}
