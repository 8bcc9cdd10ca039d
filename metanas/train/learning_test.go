package train

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/metanas-go/metanas/metanas/config"
)

// TestSmokePresetLearnsOmniglot runs configs/smoke.yaml (MetaNAS, Omniglot 5-way 1-shot,
// 60 meta-epochs) on the real Omniglot and requires the final meta-test accuracy over 40
// tasks to be well above chance (0.2): at least 0.40. Verified runs on 2 CPU cores reach
// about 0.55-0.65. Skipped when Omniglot is not found.
func TestSmokePresetLearnsOmniglot(t *testing.T) {
	if testing.Short() {
		t.Skip("learning test: several minutes")
	}
	cfg, err := config.Load("../../configs/smoke.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var dir string
	for _, d := range []string{os.Getenv("METANAS_DATA"), "../../data/omniglot", "../../../shared/data/omniglot"} {
		if d == "" {
			continue
		}
		if _, err := os.Stat(filepath.Join(d, "images_background.zip")); err == nil {
			dir = d
			break
		}
	}
	if dir == "" {
		t.Skip("Omniglot archives not found (set METANAS_DATA)")
	}
	cfg.Data.Dir = dir
	cfg.Run.Out = t.TempDir()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	res := runTo(t, cfg, Options{})
	t.Logf("final meta-test: accuracy %.3f ± %.3f over %d tasks, %d distinct architectures, %.0f active weights",
		res.Accuracy, res.CI95, res.Tasks, res.Distinct, res.MeanParams)
	if res.Tasks != 40 {
		t.Errorf("final meta-test ran %d tasks, want 40", res.Tasks)
	}
	if res.Accuracy < 0.40 {
		t.Errorf("final meta-test accuracy %.3f, want >= 0.40 (chance 0.20)", res.Accuracy)
	}
	if res.MeanParams <= 0 {
		t.Error("no active parameters reported")
	}
}
