package envswitch

import "testing"

// TestNew: unset is the default, the two values their meaning, anything else the default.
func TestNew(t *testing.T) {
	for _, c := range []struct {
		value string
		def   bool
		want  bool
	}{
		{"", false, false}, {"", true, true}, {"1", false, true}, {"0", true, false}, {"yes", false, false}, {"yes", true, true},
	} {
		t.Setenv("METANAS_ENVSWITCH_TEST", c.value)
		if got := New("METANAS_ENVSWITCH_TEST", "0", "1", c.def, "the default")(); got != c.want {
			t.Errorf("%q with default %v: %v, want %v", c.value, c.def, got, c.want)
		}
	}
}
