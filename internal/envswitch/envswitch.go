// Package envswitch reads the two-way experiment switches that the environment sets
// (METANAS_*), once per process.
package envswitch

import (
	"fmt"
	"os"
	"sync"
)

// Unset is Tri's reading of a switch that is unset (or set to neither of its values).
const Unset = -1

// Tri returns a reader of the switch name whose default the caller decides (for example by
// device): 0 for off, 1 for on, Unset for an unset variable, read once. Any other value is
// reported on stderr, with meaning (what Unset means), and read as Unset.
func Tri(name, off, on, meaning string) func() int {
	return sync.OnceValue(func() int {
		switch v := os.Getenv(name); v {
		case "":
			return Unset
		case off:
			return 0
		case on:
			return 1
		default:
			fmt.Fprintf(os.Stderr, "metanas: %s=%s is neither %s nor %s; %s\n", name, v, off, on, meaning)
			return Unset
		}
	})
}

// New returns a reader of the switch name: off or on (an unset variable is def), read
// once. Any other value is reported on stderr, with meaning (what def means), and read as
// def.
func New(name, off, on string, def bool, meaning string) func() bool {
	tri := Tri(name, off, on, meaning)
	return func() bool {
		if v := tri(); v != Unset {
			return v == 1
		}
		return def
	}
}
