package cells

import (
	"strings"
	"testing"

	"github.com/metanas-go/metanas/torch"
)

func TestCNNKeysAndCounts(t *testing.T) {
	cases := []struct {
		name    string
		cfg     CNNConfig
		spec    map[string]any
		weights int64
	}{
		// 113,236 = the reference's 113,256 minus its four dummy [1, 5] alphas.
		{"omniglot 20-way", DefaultCNNConfig(1, 28, 20), map[string]any{"kind": "cnn", "classes": 20}, 113236},
		// (its key set is checked by the parity test's strict load in pyref)
		{"miniimagenet 5-way", DefaultCNNConfig(3, 84, 5), nil, 121093},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := torch.NewScope()
			defer s.Close()
			n, err := NewCNN(s, torch.CPU, tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if got := n.Reg.Count(Weight); got != tc.weights {
				t.Errorf("weights %d, want %d", got, tc.weights)
			}
			if tc.spec != nil {
				compareKeys(t, n.Reg, referenceKeys(t, tc.spec))
			}
			x := s.Rand([]int64{3, int64(tc.cfg.InChannels), int64(tc.cfg.Size), int64(tc.cfg.Size)}, torch.CPU)
			y := n.Forward(&Ctx{S: s, Train: true}, x)
			if err := s.Err(); err != nil {
				t.Fatal(err)
			}
			if got := y.MustShape(); len(got) != 2 || got[0] != 3 || got[1] != int64(tc.cfg.Classes) {
				t.Errorf("logits %v, want [3 %d]", got, tc.cfg.Classes)
			}
		})
	}
}

func TestCNNParityWithPyTorch(t *testing.T) {
	cases := []struct {
		name string
		cfg  CNNConfig
		spec map[string]any
		bn   string
	}{
		{"omniglot eval", DefaultCNNConfig(1, 28, 20), map[string]any{"kind": "cnn", "classes": 20}, "eval"},
		{"omniglot train", DefaultCNNConfig(1, 28, 20), map[string]any{"kind": "cnn", "classes": 20}, "train"},
		{"miniimagenet eval", CNNConfig{InChannels: 3, Size: 84, Classes: 5, Channels: 16, Blocks: 4},
			map[string]any{"kind": "cnn", "classes": 5, "in_channels": 3, "size": 84, "cnn_channels": 16}, "eval"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := torch.NewScope()
			defer s.Close()
			torch.ManualSeed(5)
			n, err := NewCNN(s, torch.CPU, tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			randomizeAffineBN(t, s, n.Reg)
			state, err := n.Reg.StateDict()
			if err != nil {
				t.Fatal(err)
			}
			x := s.Rand([]int64{4, int64(tc.cfg.InChannels), int64(tc.cfg.Size), int64(tc.cfg.Size)}, torch.CPU)
			got := logitsOf(t, s, func() *torch.Tensor { return n.Forward(&Ctx{S: s, Train: tc.bn == "train"}, x) })
			spec := map[string]any{"bn": tc.bn}
			for k, v := range tc.spec {
				spec[k] = v
			}
			want := runReference(t, spec, state, x)
			if d := maxAbsDiff(got, want); d > 1e-4 {
				t.Errorf("max |Go - PyTorch| = %g\nGo %v\nPy %v", d, got, want)
			}
		})
	}
}

func TestCNNBadInput(t *testing.T) {
	cases := []struct {
		name string
		cfg  CNNConfig
		want string
	}{
		{"zero channels", CNNConfig{InChannels: 1, Size: 28, Classes: 5, Channels: 0, Blocks: 4}, "channels must be > 0"},
		{"zero blocks", CNNConfig{InChannels: 1, Size: 28, Classes: 5, Channels: 8, Blocks: 0}, "blocks"},
		{"zero in_channels", CNNConfig{InChannels: 0, Size: 28, Classes: 5, Channels: 8, Blocks: 4}, "in_channels"},
		{"size too small", CNNConfig{InChannels: 1, Size: 8, Classes: 5, Channels: 8, Blocks: 4}, "size 8"},
		{"zero classes", CNNConfig{InChannels: 1, Size: 28, Classes: 0, Channels: 8, Blocks: 4}, "classes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := torch.NewScope()
			defer s.Close()
			_, err := NewCNN(s, torch.CPU, tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}
