package cells

import (
	"math"
	"testing"

	"github.com/metanas-go/metanas/torch"
)

func TestScheduleTemperature(t *testing.T) {
	s := Schedule{TMax: 1, TMin: 0.05, MaxSteps: 5}
	cases := []struct {
		step int
		want float64
	}{{-1, 1}, {0, 1}, {1, 0.7625}, {2, 0.525}, {3, 0.2875}, {4, 0.05}, {9, 0.05}}
	for _, c := range cases {
		if got := s.Temperature(c.step); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("T(%d) = %g, want %g", c.step, got, c.want)
		}
	}
	if got := (Schedule{TMax: 2, TMin: 0.1, MaxSteps: 1}).Temperature(3); got != 2 {
		t.Errorf("one-step schedule: T = %g, want t_max", got)
	}
}

func TestNormalizeSoftmaxTemperature(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	cfg := DefaultSearchConfig(5)
	cfg.Channels, cfg.Layers, cfg.Nodes, cfg.Reductions = 4, 1, 2, nil
	n, err := NewSearchNet(s, torch.CPU, cfg)
	if err != nil {
		t.Fatal(err)
	}
	// alpha row [1, 0, ..., 0] at T = 0.5: softmax(2, 0, ...) = e^2 / (e^2 + 6).
	row := make([]float32, 2*7)
	row[0] = 1
	if err := n.AlphaNormal[0].Copy_(s.FromFloat32(row, []int64{2, 7}, torch.CPU)); err != nil {
		t.Fatal(err)
	}
	w, err := n.Normalize(s, Softmax, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	want := math.Exp(2) / (math.Exp(2) + 6)
	if got := float64(w.Normal.HostOps[0][0]); math.Abs(got-want) > 1e-6 {
		t.Errorf("w[0][0] = %g, want %g", got, want)
	}
	if got := float64(w.Normal.HostOps[0][7]); math.Abs(got-1.0/7) > 1e-6 {
		t.Errorf("row 1 should be uniform: %g", got)
	}
	if got := w.Normal.HostPairs[1]; len(got) != 3 {
		t.Errorf("node 1 has %d pair weights, want 3", len(got))
	}
	if _, err := n.Normalize(s, "nope", 1); err == nil {
		t.Error("unknown normalizer accepted")
	}
	if _, err := n.Normalize(s, Softmax, 0); err == nil {
		t.Error("zero temperature accepted")
	}
}
