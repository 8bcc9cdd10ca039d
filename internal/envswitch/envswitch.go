// Package envswitch reads the two-way experiment switches that the environment sets
// (METANAS_*), once per process.
package envswitch

import (
	"fmt"
	"os"
	"sync"
)

// New returns a reader of the switch name: off or on (an unset variable is def), read
// once. Any other value is reported on stderr, with meaning (what def means), and read as
// def.
func New(name, off, on string, def bool, meaning string) func() bool {
	return sync.OnceValue(func() bool {
		switch v := os.Getenv(name); v {
		case "":
			return def
		case off:
			return false
		case on:
			return true
		default:
			fmt.Fprintf(os.Stderr, "metanas: %s=%s is neither %s nor %s; %s\n", name, v, off, on, meaning)
			return def
		}
	})
}
