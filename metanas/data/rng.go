package data

import (
	"math"
	"math/bits"
	"math/rand/v2"
)

// The package draws all its random numbers from math/rand/v2's PCG source
// (PCG-DXSM, whose output sequence is fixed by its specification) and maps
// them to ranges with the helpers below, not with rand.Rand's methods, so
// that a seed gives the same tasks and synthetic images on every Go
// release.

// mix64 is the SplitMix64 finaliser, a bijective 64-bit mixer used to turn
// (seed, index) pairs into well-spread PCG seeds.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// Stream constants keep the generators of different uses apart.
const (
	streamTask      = 0x7461736b5f763031 // "task_v01"
	streamValSplit  = 0x76616c5f73706c74 // "val_splt"
	streamSynthetic = 0x73796e7468657431 // "synthet1"
)

// newPCG returns a PCG source for (seed, index) within a stream.
func newPCG(stream, seed, index uint64) *rand.PCG {
	a := mix64(seed ^ stream)
	b := mix64(index + 0x9e3779b97f4a7c15*(a|1))
	return rand.NewPCG(a, b^stream)
}

// uintn returns a uniform integer in [0, n) (n > 0) by Lemire's
// multiply-and-reject method.
func uintn(src *rand.PCG, n uint64) uint64 {
	hi, lo := bits.Mul64(src.Uint64(), n)
	if lo < n {
		thresh := -n % n
		for lo < thresh {
			hi, lo = bits.Mul64(src.Uint64(), n)
		}
	}
	return hi
}

// shuffleInts permutes s uniformly (Fisher-Yates).
func shuffleInts(src *rand.PCG, s []int) {
	for i := len(s) - 1; i > 0; i-- {
		j := int(uintn(src, uint64(i+1)))
		s[i], s[j] = s[j], s[i]
	}
}

// float64Unit returns a uniform float64 in [0, 1) with 53 random bits.
func float64Unit(src *rand.PCG) float64 {
	return float64(src.Uint64()>>11) / (1 << 53)
}

// normal returns a standard normal deviate (Box-Muller; the second value
// of the pair is discarded to keep the generator stateless).
func normal(src *rand.PCG) float64 {
	u1 := 1 - float64Unit(src) // (0, 1]
	u2 := float64Unit(src)
	return math.Sqrt(-2*math.Log(u1)) * math.Cos(2*math.Pi*u2)
}
