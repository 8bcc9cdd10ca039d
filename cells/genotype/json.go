package genotype

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// MarshalJSON encodes an edge as a two-element array ["op", input], the JSON
// image of the reference's Python tuple.
func (e Edge) MarshalJSON() ([]byte, error) {
	op, err := json.Marshal(e.Op)
	if err != nil {
		return nil, err
	}
	return []byte("[" + string(op) + "," + strconv.Itoa(e.Input) + "]"), nil
}

// UnmarshalJSON decodes an edge from either form: the array ["op", input]
// written by MarshalJSON, or the object {"op": "...", "input": n}. The input
// must be a JSON integer; objects with missing or unknown keys are rejected.
func (e *Edge) UnmarshalJSON(data []byte) error {
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return fmt.Errorf("genotype: %w: empty edge", ErrSyntax)
	}
	switch data[0] {
	case '[':
		var parts []json.RawMessage
		if err := json.Unmarshal(data, &parts); err != nil {
			return fmt.Errorf("genotype: %w: edge %s: %v", ErrSyntax, data, err)
		}
		if len(parts) != 2 {
			return fmt.Errorf("genotype: %w: edge %s: want [\"op\", input], got %d elements", ErrSyntax, data, len(parts))
		}
		var op string
		if err := json.Unmarshal(parts[0], &op); err != nil {
			return fmt.Errorf("genotype: %w: edge %s: op %s is not a string", ErrSyntax, data, parts[0])
		}
		in, err := jsonInt(parts[1])
		if err != nil {
			return fmt.Errorf("genotype: %w: edge %s: input %s is not an integer", ErrSyntax, data, parts[1])
		}
		*e = Edge{Op: op, Input: in}
		return nil
	case '{':
		var obj struct {
			Op    *string          `json:"op"`
			Input *json.RawMessage `json:"input"`
		}
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&obj); err != nil {
			return fmt.Errorf("genotype: %w: edge %s: %v", ErrSyntax, data, err)
		}
		if obj.Op == nil || obj.Input == nil {
			return fmt.Errorf("genotype: %w: edge %s: want {\"op\": ..., \"input\": ...}", ErrSyntax, data)
		}
		in, err := jsonInt(*obj.Input)
		if err != nil {
			return fmt.Errorf("genotype: %w: edge %s: input %s is not an integer", ErrSyntax, data, *obj.Input)
		}
		*e = Edge{Op: *obj.Op, Input: in}
		return nil
	}
	return fmt.Errorf("genotype: %w: edge %s: want [\"op\", input] or {\"op\": ..., \"input\": ...}", ErrSyntax, data)
}

// jsonInt decodes a JSON number that is written as an integer.
func jsonInt(raw json.RawMessage) (int, error) {
	return strconv.Atoi(string(bytes.TrimSpace(raw)))
}

// genotypeFields mirrors Genotype without its methods.
type genotypeFields Genotype

// MarshalJSON encodes g as an object with the keys normal, normal_concat,
// reduce and reduce_concat; edges are ["op", input] arrays and concats are
// arrays of indices. Nil slices are written as empty arrays.
func (g Genotype) MarshalJSON() ([]byte, error) {
	f := genotypeFields(g.Clone())
	if f.Normal == nil {
		f.Normal = [][]Edge{}
	}
	if f.Reduce == nil {
		f.Reduce = [][]Edge{}
	}
	for _, nodes := range [][][]Edge{f.Normal, f.Reduce} {
		for i := range nodes {
			if nodes[i] == nil {
				nodes[i] = []Edge{}
			}
		}
	}
	if f.NormalConcat == nil {
		f.NormalConcat = []int{}
	}
	if f.ReduceConcat == nil {
		f.ReduceConcat = []int{}
	}
	return json.Marshal(f)
}

// UnmarshalJSON decodes g from the object written by MarshalJSON (edges in
// either form accepted by Edge.UnmarshalJSON), or from a JSON string holding
// the genotype in the text form read by Parse. In the object, normal and
// reduce are required, a missing concat defaults to all nodes, and unknown
// keys are rejected. The result is validated as by Validate(nil); on error g
// is left unchanged. A JSON null leaves g unchanged.
func (g *Genotype) UnmarshalJSON(data []byte) error {
	data = bytes.TrimSpace(data)
	if bytes.Equal(data, []byte("null")) {
		return nil
	}
	if len(data) > 0 && data[0] == '"' {
		var s string
		if err := json.Unmarshal(data, &s); err != nil {
			return fmt.Errorf("genotype: %w: %v", ErrSyntax, err)
		}
		parsed, err := Parse(s)
		if err != nil {
			return err
		}
		*g = parsed
		return nil
	}
	var obj struct {
		Normal       *[][]Edge `json:"normal"`
		NormalConcat *[]int    `json:"normal_concat"`
		Reduce       *[][]Edge `json:"reduce"`
		ReduceConcat *[]int    `json:"reduce_concat"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&obj); err != nil {
		if errors.Is(err, ErrSyntax) { // already described by Edge.UnmarshalJSON
			return err
		}
		return fmt.Errorf("genotype: %w: %v", ErrSyntax, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("genotype: %w: unexpected data after the genotype object", ErrSyntax)
	}
	if obj.Normal == nil {
		return fmt.Errorf("genotype: %w: missing key \"normal\"", ErrSyntax)
	}
	if obj.Reduce == nil {
		return fmt.Errorf("genotype: %w: missing key \"reduce\"", ErrSyntax)
	}
	out := Genotype{Normal: *obj.Normal, Reduce: *obj.Reduce}
	if obj.NormalConcat != nil {
		out.NormalConcat = *obj.NormalConcat
	} else {
		out.NormalConcat = DefaultConcat(len(out.Normal))
	}
	if obj.ReduceConcat != nil {
		out.ReduceConcat = *obj.ReduceConcat
	} else {
		out.ReduceConcat = DefaultConcat(len(out.Reduce))
	}
	if err := out.Validate(nil); err != nil {
		return err
	}
	*g = out
	return nil
}
