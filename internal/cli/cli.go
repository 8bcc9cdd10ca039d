// Package cli holds what the commands share: exit codes, flag parsing, logging and terminal
// detection.
package cli

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/spf13/pflag"
)

// Exit codes.
const (
	OK    = 0
	Fail  = 1 // a failure while running
	Usage = 2 // bad input: flags, configuration, data, files
)

// IsTerminal reports whether f is a character device (an interactive terminal).
func IsTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// Logger returns a text slog logger on w.
func Logger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// Errorf prints "prog: message" to stderr and returns code.
func Errorf(prog string, code int, err error) int {
	fmt.Fprintf(os.Stderr, "%s: %v\n", prog, err)
	return code
}

// Parse parses args into fs. It returns done=true with the exit status when the program
// should stop: OK after --help, Usage (the error printed) on a bad flag.
func Parse(fs *pflag.FlagSet, prog string, args []string) (code int, done bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return OK, true
		}
		return Errorf(prog, Usage, err), true
	}
	return OK, false
}
