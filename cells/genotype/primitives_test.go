package genotype

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestPrimitiveSetOrder(t *testing.T) {
	tests := []struct {
		name string
		got  []string
		want []string
	}{
		{"FewShot", FewShot, []string{"max_pool_3x3", "avg_pool_3x3", "skip_connect", "conv_1x5_5x1", "conv_3x3", "sep_conv_3x3", "dil_conv_3x3"}},
		{"DARTS", DARTS, []string{"max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5", "none"}},
		{"KnownOps", KnownOps(), []string{"max_pool_3x3", "avg_pool_3x3", "skip_connect", "conv_1x5_5x1", "conv_3x3", "sep_conv_3x3", "dil_conv_3x3", "sep_conv_5x5", "dil_conv_5x5", "none"}},
	}
	for _, tt := range tests {
		if !reflect.DeepEqual(tt.got, tt.want) {
			t.Errorf("%s = %v, want %v", tt.name, tt.got, tt.want)
		}
	}
}

func TestPrimitives(t *testing.T) {
	tests := []struct {
		name    string
		want    []string
		wantErr bool
	}{
		{"few_shot", FewShot, false},
		{"fewshot", FewShot, false},
		{" Few-Shot ", FewShot, false},
		{"darts", DARTS, false},
		{"DARTS", DARTS, false},
		{"nasnet", nil, true},
		{"", nil, true},
	}
	for _, tt := range tests {
		got, err := Primitives(tt.name)
		if tt.wantErr {
			if err == nil {
				t.Errorf("Primitives(%q): no error", tt.name)
				continue
			}
			if !errors.Is(err, ErrUnknownPrimitiveSet) || !strings.Contains(err.Error(), `"`+tt.name+`"`) {
				t.Errorf("Primitives(%q) error %q: want ErrUnknownPrimitiveSet naming the set", tt.name, err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Primitives(%q) = %v, %v; want %v", tt.name, got, err, tt.want)
		}
	}
	// The result is a copy.
	p, _ := Primitives("darts")
	p[0] = "changed"
	if DARTS[0] != OpMaxPool3x3 {
		t.Fatal("Primitives returned the package slice, not a copy")
	}
}

func TestValidateOpAndIndex(t *testing.T) {
	tests := []struct {
		op    string
		prims []string
		index int
	}{
		{"max_pool_3x3", FewShot, 0},
		{"conv_1x5_5x1", FewShot, 3},
		{"dil_conv_3x3", FewShot, 6},
		{"none", DARTS, 7},
		{"sep_conv_5x5", DARTS, 4},
		{"none", FewShot, -1},
		{"sep_conv_5x5", FewShot, -1},
		{"conv_1x5_5x1", DARTS, -1},
		{"", FewShot, -1},
	}
	for _, tt := range tests {
		i, err := OpIndex(tt.op, tt.prims)
		verr := ValidateOp(tt.op, tt.prims)
		if tt.index >= 0 {
			if err != nil || verr != nil || i != tt.index {
				t.Errorf("OpIndex(%q) = %d, %v (ValidateOp %v); want %d", tt.op, i, err, verr, tt.index)
			}
			continue
		}
		if err == nil || verr == nil {
			t.Errorf("OpIndex/ValidateOp(%q, %v): no error", tt.op, tt.prims)
			continue
		}
		msg := verr.Error()
		if !errors.Is(verr, ErrUnknownOp) || !strings.Contains(msg, `"`+tt.op+`"`) ||
			!strings.Contains(msg, strings.Join(tt.prims, ", ")) {
			t.Errorf("ValidateOp(%q) error %q: want ErrUnknownOp naming the op and the valid ones", tt.op, msg)
		}
	}
}
