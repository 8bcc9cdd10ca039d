package config

import (
	"errors"
	"fmt"
	"strings"
)

// Error is one configuration problem. Commands should print it and exit with
// status 2.
type Error struct {
	// File is the YAML file, or the command-line flag (for example
	// "--set task.w_lr=-1"), that supplied the offending value; empty when
	// the value is a built-in default.
	File string
	// Line is the 1-based line in File, or 0 when unknown or not a file.
	Line int
	// Field is the dotted field name, for example "task.w_lr"; empty for
	// problems with the file as a whole.
	Field string
	// Msg says what is wrong and what to do about it.
	Msg string
}

// Error formats the problem as "file:line: field: message", leaving out the
// parts that are unknown.
func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
		}
		b.WriteString(": ")
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is a list of configuration problems, reported together.
type Errors []*Error

// Error returns one problem per line.
func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap returns the individual problems, so errors.As finds an *Error.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// Fields returns the dotted field names of the problems, in order.
func (es Errors) Fields() []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.Field
	}
	return out
}

// AsErrors returns the configuration problems in err: every *Error in an
// Errors list or in a single *Error, or nil when err holds none.
func AsErrors(err error) Errors {
	var es Errors
	if errors.As(err, &es) {
		return es
	}
	var e *Error
	if errors.As(err, &e) {
		return Errors{e}
	}
	return nil
}

// orNil returns es as an error, or nil when es is empty.
func (es Errors) orNil() error {
	if len(es) == 0 {
		return nil
	}
	return es
}
