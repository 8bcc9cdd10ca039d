package genotype

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ParseError reports a malformed or invalid genotype string. It wraps
// ErrSyntax for malformed text, or the error that Validate would report
// (ErrUnknownOp, ErrInputRange, ErrConcat, ...) for well-formed text that
// describes an invalid genotype.
type ParseError struct {
	// Offset is the byte offset of the offending token in the input.
	Offset int
	// Token is the offending token as written; empty at the end of the input.
	Token string
	// Msg describes the problem.
	Msg string
	// Err is the wrapped error.
	Err error
}

// Error formats the error with the offset and the offending token.
func (e *ParseError) Error() string {
	at := "end of input"
	if e.Token != "" {
		tok := e.Token
		if len(tok) > 40 {
			tok = tok[:40] + "..."
		}
		at = fmt.Sprintf("token %q", tok)
	}
	return fmt.Sprintf("genotype: parse error at offset %d, %s: %s", e.Offset, at, e.Msg)
}

// Unwrap returns the wrapped error.
func (e *ParseError) Unwrap() error { return e.Err }

// Parse reads a genotype in the PyTorch reference's repr format, as written by
// Genotype.String, and checks it against KnownOps. The syntax is that of the
// Python expression, with some latitude:
//
//   - the leading "Genotype" is optional: "Genotype(normal=...)",
//     "(normal=...)" and "normal=..., reduce=..." are accepted;
//   - fields are keyword arguments in any order; normal and reduce are
//     required, a missing concat defaults to all nodes (DefaultConcat);
//   - any whitespace, including newlines, may separate tokens, and trailing
//     commas are allowed;
//   - op names are single- or double-quoted strings (a u prefix is allowed);
//   - edges are tuples ('op', 1) or lists ['op', 1], nodes and the node list
//     are lists or tuples;
//   - a concat is range(a, b) (also range(b) and range(a, b, step)) or a list
//     or tuple of indices.
//
// The parsed genotype is validated as by Validate(nil). Errors are
// *ParseError values that give the byte offset of the offending token and the
// token itself.
func Parse(s string) (Genotype, error) { return ParseWith(s, nil) }

// ParseWith is Parse with the op names checked against primitives instead of
// KnownOps (nil means KnownOps).
func ParseWith(s string, primitives []string) (Genotype, error) {
	if primitives == nil {
		primitives = KnownOps()
	}
	if len(primitives) == 0 {
		return Genotype{}, fmt.Errorf("genotype: %w: empty primitive set", ErrUnknownPrimitiveSet)
	}
	toks, err := lex(s)
	if err != nil {
		return Genotype{}, err
	}
	p := &parser{toks: toks}
	r, err := p.genotype()
	if err != nil {
		return Genotype{}, err
	}
	g := Genotype{Normal: r.normal.nodes, Reduce: r.reduce.nodes}
	g.NormalConcat = r.normalConcat.indices(len(g.Normal))
	g.ReduceConcat = r.reduceConcat.indices(len(g.Reduce))
	if err := r.normal.check("normal", r.normalConcat, r.end, primitives); err != nil {
		return Genotype{}, err
	}
	if err := r.reduce.check("reduce", r.reduceConcat, r.end, primitives); err != nil {
		return Genotype{}, err
	}
	return g, nil
}

// Token kinds.
type tokKind int

const (
	tokEOF tokKind = iota
	tokIdent
	tokNumber
	tokString
	tokPunct
)

type token struct {
	kind tokKind
	text string // as written
	str  string // decoded value of a string literal
	pos  int    // byte offset
}

func (t token) is(punct string) bool { return t.kind == tokPunct && t.text == punct }

func syntaxError(t token, format string, args ...any) *ParseError {
	return &ParseError{Offset: t.pos, Token: t.text, Msg: fmt.Sprintf(format, args...), Err: ErrSyntax}
}

// describe names a token for "found ..." messages.
func describe(t token) string {
	if t.kind == tokEOF {
		return "end of input"
	}
	return strconv.Quote(t.text)
}

func isIdentStart(c byte) bool {
	return c == '_' || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z')
}

func isIdentPart(c byte) bool { return isIdentStart(c) || ('0' <= c && c <= '9') }

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// lex splits s into tokens; the last token is tokEOF.
func lex(s string) ([]token, error) {
	var toks []token
	i := 0
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		c := s[i]
		switch {
		case unicode.IsSpace(r):
			i += size
		case strings.IndexByte("()[],=", c) >= 0:
			toks = append(toks, token{kind: tokPunct, text: s[i : i+1], pos: i})
			i++
		case c == '\'' || c == '"':
			t, err := lexString(s, i, i)
			if err != nil {
				return nil, err
			}
			toks = append(toks, t)
			i += len(t.text)
		case (c == 'u' || c == 'U') && i+1 < len(s) && (s[i+1] == '\'' || s[i+1] == '"'):
			t, err := lexString(s, i, i+1)
			if err != nil {
				return nil, err
			}
			toks = append(toks, t)
			i += len(t.text)
		case isIdentStart(c):
			j := i + 1
			for j < len(s) && isIdentPart(s[j]) {
				j++
			}
			toks = append(toks, token{kind: tokIdent, text: s[i:j], pos: i})
			i = j
		case isDigit(c) || ((c == '-' || c == '+') && i+1 < len(s) && isDigit(s[i+1])):
			// Take the whole word so that "1.5" or "2x" is reported as one token.
			j := i + 1
			for j < len(s) && (isIdentPart(s[j]) || s[j] == '.') {
				j++
			}
			toks = append(toks, token{kind: tokNumber, text: s[i:j], pos: i})
			i = j
		default:
			return nil, syntaxError(token{text: string(r), pos: i}, "unexpected character %q", r)
		}
	}
	return append(toks, token{kind: tokEOF, pos: len(s)}), nil
}

// lexString reads a quoted string whose prefix starts at start and whose
// opening quote is at q. Backslash escapes the quote and the backslash.
func lexString(s string, start, q int) (token, error) {
	quote := s[q]
	var b strings.Builder
	for j := q + 1; j < len(s); j++ {
		switch c := s[j]; {
		case c == quote:
			return token{kind: tokString, text: s[start : j+1], str: b.String(), pos: start}, nil
		case c == '\n':
			j = len(s)
		case c == '\\' && j+1 < len(s) && (s[j+1] == quote || s[j+1] == '\\'):
			b.WriteByte(s[j+1])
			j++
		default:
			b.WriteByte(c)
		}
	}
	end := strings.IndexByte(s[start:], '\n')
	if end < 0 {
		end = len(s) - start
	}
	return token{}, syntaxError(token{text: s[start : start+end], pos: start}, "unterminated string")
}

type parser struct {
	toks []token
	i    int
}

func (p *parser) peek() token { return p.toks[p.i] }

func (p *parser) next() token {
	t := p.toks[p.i]
	if t.kind != tokEOF {
		p.i++
	}
	return t
}

// cellInfo is a parsed cell with the tokens needed to place errors.
type cellInfo struct {
	set    bool
	open   token // opens the node list
	nodes  [][]Edge
	nodeAt []token   // opens each node
	opAt   [][]token // op token of each edge
	inAt   [][]token // input token of each edge
}

// concatInfo is a parsed concat with the token of each index.
type concatInfo struct {
	set  bool
	open token
	vals []int
	at   []token
}

func (c concatInfo) indices(nodes int) []int {
	if !c.set {
		return DefaultConcat(nodes)
	}
	if c.vals == nil {
		return []int{}
	}
	return c.vals
}

type parsed struct {
	normal, reduce             cellInfo
	normalConcat, reduceConcat concatInfo
	end                        token // closes the genotype
}

// check validates the cell and reports the first defect at its token.
func (c cellInfo) check(name string, cc concatInfo, end token, primitives []string) error {
	pr := checkCell(c.nodes, cc.indices(len(c.nodes)), primitives)
	if pr == nil {
		return nil
	}
	var at token
	switch {
	case pr.concat >= 0:
		at = cc.at[pr.concat]
	case pr.edge >= 0 && errors.Is(pr.err, ErrUnknownOp):
		at = c.opAt[pr.node][pr.edge]
	case pr.edge >= 0:
		at = c.inAt[pr.node][pr.edge]
	case pr.node >= 0:
		at = c.nodeAt[pr.node]
	case errors.Is(pr.err, ErrConcat) && cc.set:
		at = cc.open
	case errors.Is(pr.err, ErrConcat):
		at = end
	default:
		at = c.open
	}
	return &ParseError{Offset: at.pos, Token: at.text, Msg: name + " cell" + pr.Error(), Err: pr}
}

const fieldList = "normal, normal_concat, reduce, reduce_concat"

func (p *parser) genotype() (*parsed, error) {
	r := &parsed{}
	t := p.peek()
	closing := "" // "" means the fields run to the end of the input
	switch {
	case t.kind == tokEOF:
		return nil, syntaxError(t, "empty genotype string")
	case t.kind == tokIdent && strings.EqualFold(t.text, "Genotype"):
		p.next()
		if open := p.next(); !open.is("(") {
			return nil, syntaxError(open, "expected '(' after Genotype, found %s", describe(open))
		}
		closing = ")"
	case t.is("("):
		p.next()
		closing = ")"
	case t.kind == tokIdent && p.toks[p.i+1].is("("):
		return nil, syntaxError(t, "expected Genotype(...), found %s(...)", t.text)
	case t.kind != tokIdent:
		return nil, syntaxError(t, "expected Genotype(...), found %s", describe(t))
	}
	atEnd := func(t token) bool {
		if closing == "" {
			return t.kind == tokEOF
		}
		return t.is(closing)
	}
	for !atEnd(p.peek()) {
		name := p.next()
		if name.kind != tokIdent {
			return nil, syntaxError(name, "expected a field name (%s), found %s", fieldList, describe(name))
		}
		if eq := p.next(); !eq.is("=") {
			return nil, syntaxError(eq, "expected '=' after %s, found %s", name.text, describe(eq))
		}
		var err error
		switch name.text {
		case "normal":
			err = p.field(name, r.normal.set, func() error { return p.cell(&r.normal) })
		case "reduce":
			err = p.field(name, r.reduce.set, func() error { return p.cell(&r.reduce) })
		case "normal_concat":
			err = p.field(name, r.normalConcat.set, func() error { return p.concat(&r.normalConcat) })
		case "reduce_concat":
			err = p.field(name, r.reduceConcat.set, func() error { return p.concat(&r.reduceConcat) })
		default:
			err = syntaxError(name, "unknown field %q (want %s)", name.text, fieldList)
		}
		if err != nil {
			return nil, err
		}
		t := p.peek()
		if t.is(",") {
			p.next()
			continue
		}
		if !atEnd(t) {
			want := "')'"
			if closing == "" {
				want = "end of input"
			}
			return nil, syntaxError(t, "expected ',' or %s after field %s, found %s", want, name.text, describe(t))
		}
	}
	r.end = p.next()
	if t := p.peek(); t.kind != tokEOF {
		return nil, syntaxError(t, "unexpected %s after the genotype", describe(t))
	}
	if !r.normal.set {
		return nil, syntaxError(r.end, "missing field normal")
	}
	if !r.reduce.set {
		return nil, syntaxError(r.end, "missing field reduce")
	}
	return r, nil
}

func (p *parser) field(name token, dup bool, parse func() error) error {
	if dup {
		return syntaxError(name, "field %s given twice", name.text)
	}
	return parse()
}

// seq parses a list or tuple, calling elem for each element. It accepts a
// trailing comma and returns the opening token.
func (p *parser) seq(what string, elem func() error) (token, error) {
	open := p.next()
	var closing string
	switch {
	case open.is("["):
		closing = "]"
	case open.is("("):
		closing = ")"
	default:
		return open, syntaxError(open, "expected '[' to start %s, found %s", what, describe(open))
	}
	for {
		if p.peek().is(closing) {
			p.next()
			return open, nil
		}
		if err := elem(); err != nil {
			return open, err
		}
		t := p.next()
		if t.is(closing) {
			return open, nil
		}
		if !t.is(",") {
			return open, syntaxError(t, "expected ',' or '%s' in %s, found %s", closing, what, describe(t))
		}
	}
}

func (p *parser) cell(c *cellInfo) error {
	c.set = true
	open, err := p.seq("node list", func() error {
		nodeOpen := p.peek()
		edges := []Edge{}
		var ops, ins []token
		_, err := p.seq("node", func() error {
			e, opTok, inTok, err := p.edge()
			if err != nil {
				return err
			}
			edges = append(edges, e)
			ops = append(ops, opTok)
			ins = append(ins, inTok)
			return nil
		})
		if err != nil {
			return err
		}
		c.nodes = append(c.nodes, edges)
		c.nodeAt = append(c.nodeAt, nodeOpen)
		c.opAt = append(c.opAt, ops)
		c.inAt = append(c.inAt, ins)
		return nil
	})
	c.open = open
	return err
}

func (p *parser) edge() (e Edge, opTok, inTok token, err error) {
	open := p.next()
	var closing string
	switch {
	case open.is("("):
		closing = ")"
	case open.is("["):
		closing = "]"
	default:
		return e, opTok, inTok, syntaxError(open, "expected '(' to start an edge ('op', input), found %s", describe(open))
	}
	opTok = p.next()
	switch opTok.kind {
	case tokString:
	case tokIdent:
		return e, opTok, inTok, syntaxError(opTok, "op name %s must be quoted", opTok.text)
	default:
		return e, opTok, inTok, syntaxError(opTok, "expected a quoted op name, found %s", describe(opTok))
	}
	if t := p.next(); !t.is(",") {
		return e, opTok, inTok, syntaxError(t, "expected ',' after op name, found %s", describe(t))
	}
	inTok = p.next()
	if inTok.kind != tokNumber {
		return e, opTok, inTok, syntaxError(inTok, "expected an integer input index, found %s", describe(inTok))
	}
	in, convErr := strconv.Atoi(inTok.text)
	if convErr != nil {
		return e, opTok, inTok, syntaxError(inTok, "input index %s is not an integer", inTok.text)
	}
	t := p.next()
	if t.is(",") {
		t = p.next()
	}
	if !t.is(closing) {
		return e, opTok, inTok, syntaxError(t, "expected '%s' to close the edge, found %s", closing, describe(t))
	}
	return Edge{Op: opTok.str, Input: in}, opTok, inTok, nil
}

// maxConcat bounds the length of a range() concat.
const maxConcat = 1 << 12

func (p *parser) intToken(what string) (int, token, error) {
	t := p.next()
	if t.kind != tokNumber {
		return 0, t, syntaxError(t, "expected an integer %s, found %s", what, describe(t))
	}
	v, err := strconv.Atoi(t.text)
	if err != nil {
		return 0, t, syntaxError(t, "%s %s is not an integer", what, t.text)
	}
	return v, t, nil
}

func (p *parser) concat(c *concatInfo) error {
	c.set = true
	c.open = p.peek()
	if c.open.kind == tokIdent && c.open.text == "range" {
		p.next()
		return p.rangeArgs(c)
	}
	if !c.open.is("[") && !c.open.is("(") {
		return syntaxError(c.open, "expected range(a, b) or a list of indices, found %s", describe(c.open))
	}
	_, err := p.seq("concat list", func() error {
		v, t, err := p.intToken("concat index")
		if err != nil {
			return err
		}
		c.vals = append(c.vals, v)
		c.at = append(c.at, t)
		return nil
	})
	return err
}

func (p *parser) rangeArgs(c *concatInfo) error {
	var args []int
	_, err := p.seq("range arguments", func() error {
		if len(args) == 3 {
			return syntaxError(p.peek(), "range takes at most 3 arguments")
		}
		v, _, err := p.intToken("range argument")
		args = append(args, v)
		return err
	})
	if err != nil {
		return err
	}
	start, stop, step := 0, 0, 1
	switch len(args) {
	case 0:
		return syntaxError(c.open, "range needs 1 to 3 arguments")
	case 1:
		stop = args[0]
	case 2:
		start, stop = args[0], args[1]
	default:
		start, stop, step = args[0], args[1], args[2]
	}
	if step == 0 {
		return syntaxError(c.open, "range step must not be zero")
	}
	for v := start; (step > 0 && v < stop) || (step < 0 && v > stop); v += step {
		if len(c.vals) == maxConcat {
			return syntaxError(c.open, "range longer than %d", maxConcat)
		}
		c.vals = append(c.vals, v)
		c.at = append(c.at, c.open)
	}
	return nil
}
