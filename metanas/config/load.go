package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// origin is where a field's value was set: a file and line, or a flag.
type origin struct {
	file string
	line int
}

// originOf returns where field was set; fields never set report the file
// the config was loaded from, with no line.
func (c *Config) originOf(field string) origin {
	if o, ok := c.origins[field]; ok {
		return o
	}
	return origin{file: c.file}
}

// Load reads the YAML file at path over Default. Keys the file leaves out
// keep their defaults, and so do keys given with an empty (null) value.
// Unknown keys, wrong types, duplicate keys and syntax errors are reported as
// *Error values naming the file, line and dotted field. Load does not
// validate: apply overrides first, then call Validate.
func Load(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		msg := err.Error()
		var pe *fs.PathError
		if errors.As(err, &pe) {
			msg = pe.Err.Error()
		}
		return Config{}, &Error{File: path, Msg: "cannot read the config file: " + msg}
	}
	return Parse(path, data)
}

// yamlLine matches the "yaml: line N: message" form of yaml.v3 errors.
var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// Parse decodes YAML configuration data over Default, as Load does; name is
// used in error messages in place of a file name.
func Parse(name string, data []byte) (Config, error) {
	cfg := Default()
	cfg.file = name

	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return Config{}, syntaxError(name, err)
	}
	st := decodeState{src: name, lines: true, rec: map[string]origin{}}
	if doc.Kind == yaml.DocumentNode && len(doc.Content) > 0 {
		root := doc.Content[0]
		if resolveAlias(root).Kind != yaml.MappingNode && !isNull(root) {
			return Config{}, &Error{File: name, Line: root.Line,
				Msg: "the file must be a mapping of sections (data, model, arch, task, meta, run)"}
		}
		st.value(root, reflect.ValueOf(&cfg).Elem(), "")
	}
	if len(st.errs) > 0 {
		return Config{}, st.errs
	}
	cfg.origins = st.rec

	// Decode once more with yaml.v3's own strict decoder. It agrees with
	// the walk above on every well-formed file and catches anything the walk
	// does not check itself; its messages are mapped to fields by line.
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	scratch := Default()
	if err := dec.Decode(&scratch); err != nil && err != io.EOF {
		return Config{}, decoderErrors(name, err, st.rec)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err != io.EOF {
		line := 0
		if err == nil {
			line = extra.Line
		}
		return Config{}, &Error{File: name, Line: line,
			Msg: "the file holds more than one YAML document; keep only one (remove the '---' separator)"}
	}
	return cfg, nil
}

// syntaxError turns a YAML parse error into an *Error with a line number.
func syntaxError(name string, err error) *Error {
	msg := err.Error()
	line := 0
	if m := yamlLine.FindStringSubmatch(strings.TrimPrefix(msg, "yaml: ")); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	} else {
		msg = strings.TrimPrefix(msg, "yaml: ")
	}
	return &Error{File: name, Line: line,
		Msg: "invalid YAML: " + msg + "; check the indentation and quoting"}
}

// decoderErrors maps yaml.v3 decoder errors to fields through the lines the
// walk recorded.
func decoderErrors(name string, err error, rec map[string]origin) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return syntaxError(name, err)
	}
	var es Errors
	for _, s := range te.Errors {
		e := &Error{File: name, Msg: s}
		if m := yamlLine.FindStringSubmatch(s); m != nil {
			e.Line, _ = strconv.Atoi(m[1])
			e.Msg = m[2]
			e.Field = fieldAtLine(rec, e.Line)
		}
		es = append(es, e)
	}
	return es
}

// fieldAtLine returns the longest recorded field name set on line.
func fieldAtLine(rec map[string]origin, line int) string {
	best := ""
	for f, o := range rec {
		if o.line == line && len(f) > len(best) {
			best = f
		}
	}
	return best
}

// Set applies one "section.key=value" override, as given to --set. The value
// is parsed as YAML, so numbers, booleans, lists ("[1,3]") and, for a whole
// section, flow mappings ("{ways: 5, shots: 1}") work; string fields take the
// value as written. Nested keys use more dots ("data.synthetic.size=32").
// An unknown key is an error listing the valid keys of its section; on any
// error c is left unchanged.
func (c *Config) Set(kv string) error {
	src := "--set " + kv
	key, value, ok := strings.Cut(kv, "=")
	if !ok {
		return &Error{File: src, Msg: "want section.key=value, for example task.w_lr=0.01"}
	}
	return c.setPath(strings.TrimSpace(key), strings.TrimSpace(value), src)
}

// setPath sets the field at the dotted key to value (YAML text), recording
// src as its origin.
func (c *Config) setPath(key, value, src string) error {
	if key == "" {
		return &Error{File: src, Msg: "missing key; want section.key=value, for example task.w_lr=0.01"}
	}
	cp := *c
	v := reflect.ValueOf(&cp).Elem()
	parts := strings.Split(key, ".")
	for i, part := range parts {
		path := strings.Join(parts[:i+1], ".")
		if !isSection(v.Type()) {
			return &Error{File: src, Field: path,
				Msg: fmt.Sprintf("%s is a value, not a section; use %s=value", strings.Join(parts[:i], "."), strings.Join(parts[:i], "."))}
		}
		idx := fieldIndex(v.Type(), part)
		if idx < 0 {
			return &Error{File: src, Field: path, Msg: unknownKeyMsg(v.Type(), strings.Join(parts[:i], "."), part)}
		}
		v = v.Field(idx)
	}
	node, err := parseValue(value, v.Type())
	if err != nil {
		return &Error{File: src, Field: key, Msg: err.Error()}
	}
	rec := make(map[string]origin, len(c.origins)+1)
	for f, o := range c.origins {
		rec[f] = o
	}
	st := decodeState{src: src, rec: rec}
	st.value(node, v, key)
	if len(st.errs) > 0 {
		return st.errs
	}
	cp.origins = st.rec
	*c = cp
	return nil
}

// parseValue turns override text into a YAML node for a field of type t.
// String fields take the text as written (without surrounding quotes).
func parseValue(value string, t reflect.Type) (*yaml.Node, error) {
	if t.Kind() == reflect.String {
		var doc yaml.Node
		if err := yaml.Unmarshal([]byte(value), &doc); err == nil && doc.Kind == yaml.DocumentNode &&
			len(doc.Content) == 1 && doc.Content[0].Kind == yaml.ScalarNode {
			n := doc.Content[0]
			if n.Style&(yaml.SingleQuotedStyle|yaml.DoubleQuotedStyle) != 0 {
				value = n.Value
			} else if n.Tag == "!!null" {
				value = ""
			}
		}
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: value}, nil
	}
	if value == "" {
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: ""}, nil
	}
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(value), &doc); err != nil {
		return nil, fmt.Errorf("cannot parse %q as YAML (%s); want %s",
			value, strings.TrimPrefix(err.Error(), "yaml: "), want(t))
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: ""}, nil
	}
	return doc.Content[0], nil
}

// decodeState walks a YAML node tree onto a Config, checking every key.
type decodeState struct {
	src   string            // file name or flag text, for errors and origins
	lines bool              // whether node lines refer to src (a file)
	rec   map[string]origin // origins of the fields set so far
	errs  Errors
}

func (s *decodeState) fail(n *yaml.Node, field, msg string) {
	e := &Error{File: s.src, Field: field, Msg: msg}
	if s.lines && n != nil {
		e.Line = n.Line
	}
	s.errs = append(s.errs, e)
}

func (s *decodeState) record(n *yaml.Node, field string) {
	o := origin{file: s.src}
	if s.lines {
		o.line = n.Line
	}
	s.rec[field] = o
}

// value decodes node n into v, the field named path ("" for the root).
func (s *decodeState) value(n *yaml.Node, v reflect.Value, path string) {
	n = resolveAlias(n)
	if isSection(v.Type()) {
		s.section(n, v, path)
		return
	}
	// A null value keeps the current (default) value, as yaml.v3 does for
	// non-nillable fields; for lists it means "empty".
	if isNull(n) && v.Kind() != reflect.Slice {
		return
	}
	ptr := reflect.New(v.Type())
	if n.Kind == yaml.MappingNode || truncatesFloat(n, v.Type()) || n.Decode(ptr.Interface()) != nil {
		s.fail(n, path, fmt.Sprintf("cannot use %s; want %s", describe(n), want(v.Type())))
		return
	}
	v.Set(ptr.Elem())
	if path != "" {
		s.record(n, path)
	}
}

// section decodes a mapping node into the struct v.
func (s *decodeState) section(n *yaml.Node, v reflect.Value, path string) {
	if isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		name := path
		if name == "" {
			name = "the configuration"
		}
		s.fail(n, path, fmt.Sprintf("%s is a section; want a mapping of its keys (%s), not %s",
			name, strings.Join(sectionKeys(v.Type()), ", "), describe(n)))
		return
	}
	if path != "" {
		s.record(n, path)
	}
	// Merge keys ("<<: *anchor") first, so keys written out win over them.
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Tag != "!!merge" {
			continue
		}
		val = resolveAlias(val)
		if val.Kind == yaml.SequenceNode {
			for _, m := range val.Content {
				s.section(resolveAlias(m), v, path)
			}
		} else {
			s.section(val, v, path)
		}
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Tag == "!!merge" {
			continue
		}
		field := k.Value
		if path != "" {
			field = path + "." + k.Value
		}
		if k.Kind != yaml.ScalarNode {
			s.fail(k, path, "keys must be plain names")
			continue
		}
		if first, dup := seen[k.Value]; dup {
			s.fail(k, field, fmt.Sprintf("duplicate key; it is already set on line %d, keep one", first))
			continue
		}
		seen[k.Value] = k.Line
		idx := fieldIndex(v.Type(), k.Value)
		if idx < 0 {
			s.fail(k, field, unknownKeyMsg(v.Type(), path, k.Value))
			continue
		}
		s.value(val, v.Field(idx), field)
	}
}

// truncatesFloat reports whether n holds a float (or a list with one) for an
// integer field of type t; yaml.v3 would silently truncate it.
func truncatesFloat(n *yaml.Node, t reflect.Type) bool {
	n = resolveAlias(n)
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!float"
	case reflect.Slice, reflect.Array:
		if n.Kind != yaml.SequenceNode {
			return false
		}
		for _, e := range n.Content {
			if truncatesFloat(e, t.Elem()) {
				return true
			}
		}
	}
	return false
}

// resolveAlias follows alias nodes to the node they refer to.
func resolveAlias(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// isNull reports whether n is an explicit or implicit YAML null.
func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// isSection reports whether t is one of the configuration's section structs.
func isSection(t reflect.Type) bool {
	return t.Kind() == reflect.Struct
}

// yamlName returns the YAML key of struct field f, or "" if it has none.
func yamlName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "-" {
		return ""
	}
	return name
}

// fieldIndex returns the index of the field of struct t whose YAML key is
// name, or -1.
func fieldIndex(t reflect.Type, name string) int {
	for i := 0; i < t.NumField(); i++ {
		if n := yamlName(t.Field(i)); n != "" && n == name {
			return i
		}
	}
	return -1
}

// sectionKeys lists the YAML keys of struct t in declaration order.
func sectionKeys(t reflect.Type) []string {
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		if n := yamlName(t.Field(i)); n != "" {
			keys = append(keys, n)
		}
	}
	return keys
}

// unknownKeyMsg explains an unknown key in the section at path (""=root).
func unknownKeyMsg(t reflect.Type, path, key string) string {
	keys := sectionKeys(t)
	what, where := "key", "section "+strconv.Quote(path)
	if path == "" {
		what, where = "section", "the configuration"
	}
	msg := fmt.Sprintf("unknown %s %q in %s", what, key, where)
	if s := closest(key, keys); s != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", s)
	}
	return msg + "; valid " + what + "s: " + strings.Join(keys, ", ")
}

// closest returns the candidate nearest to key by edit distance, if it is
// near enough to be a likely typo.
func closest(key string, candidates []string) string {
	best, bestD := "", len(key)/2+2
	for _, c := range candidates {
		if d := editDistance(key, c); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// describe renders a node for an error message.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.ScalarNode:
		return strconv.Quote(n.Value)
	case yaml.SequenceNode:
		if len(n.Content) == 1 {
			return "a list of 1 item"
		}
		return fmt.Sprintf("a list of %d items", len(n.Content))
	case yaml.MappingNode:
		return "a mapping"
	}
	return "this value"
}

// want describes the values a field of type t accepts.
func want(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Bool:
		return "true or false"
	case reflect.String:
		return "a string"
	case reflect.Slice:
		return "a list of " + plural(t.Elem()) + ", for example " + example(t)
	case reflect.Array:
		return fmt.Sprintf("a list of exactly %d %s, for example %s", t.Len(), plural(t.Elem()), example(t))
	case reflect.Struct:
		return "a mapping of keys (" + strings.Join(sectionKeys(t), ", ") + ")"
	}
	return t.String()
}

func plural(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Float32, reflect.Float64:
		return "numbers"
	case reflect.String:
		return "strings"
	}
	return "integers"
}

func example(t reflect.Type) string {
	n := 2
	if t.Kind() == reflect.Array {
		n = t.Len()
	}
	items := make([]string, n)
	for i := range items {
		switch t.Elem().Kind() {
		case reflect.Float32, reflect.Float64:
			items[i] = []string{"0.0", "0.999"}[i%2]
		case reflect.String:
			items[i] = []string{"a", "b"}[i%2]
		default:
			items[i] = strconv.Itoa(2*i + 1)
		}
	}
	return "[" + strings.Join(items, ", ") + "]"
}

// Marshal returns the configuration as YAML, with every field written out,
// in a form Load reads back to an equal configuration.
func (c *Config) Marshal() ([]byte, error) {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		return nil, fmt.Errorf("config: marshal: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("config: marshal: %w", err)
	}
	return b.Bytes(), nil
}

// Keys returns every settable dotted field name, sorted; useful for help
// text and shell completion of --set.
func Keys() []string {
	var out []string
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for _, k := range sectionKeys(t) {
			f := t.Field(fieldIndex(t, k))
			if isSection(f.Type) {
				walk(f.Type, prefix+k+".")
				continue
			}
			out = append(out, prefix+k)
		}
	}
	walk(reflect.TypeOf(Config{}), "")
	sort.Strings(out)
	return out
}
