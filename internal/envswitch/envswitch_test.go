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

// TestTri: unset and unknown values are Unset, the two values 0 and 1.
func TestTri(t *testing.T) {
	for _, c := range []struct {
		value string
		want  int
	}{
		{"", Unset}, {"off", 0}, {"on", 1}, {"1", Unset},
	} {
		t.Setenv("METANAS_ENVSWITCH_TEST", c.value)
		if got := Tri("METANAS_ENVSWITCH_TEST", "off", "on", "the default")(); got != c.want {
			t.Errorf("%q: %d, want %d", c.value, got, c.want)
		}
	}
}
