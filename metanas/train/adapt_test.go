package train

import (
	"math"
	"testing"

	"github.com/metanas-go/metanas/metanas/config"
	"github.com/metanas-go/metanas/metanas/learn"
)

// TestAdaptTaskMatchesMetaTest checks that AdaptTask followed by Score reproduces
// MetaTest's result for the same task.
func TestAdaptTaskMatchesMetaTest(t *testing.T) {
	cfg := config.Default()
	for _, kv := range []string{
		"data.dataset=synthetic", "data.ways=3", "data.shots=1", "data.train_shots=2", "data.queries=2",
		"data.synthetic.channels=1", "data.synthetic.size=8", "data.synthetic.classes=9", "data.synthetic.per_class=6",
		"model.channels=4", "model.layers=2", "model.nodes=2", "model.reductions=[1]",
		"task.test_steps=2", "task.test_arch_steps=1", "task.test_batch_size=3", "run.workers=2", "run.out=" + t.TempDir(),
	} {
		if err := cfg.Set(kv); err != nil {
			t.Fatal(err)
		}
	}
	tr, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	const epoch = 3
	res, err := tr.MetaTest(epoch, 2, true)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		w, task, err := tr.AdaptTask(epoch, i)
		if err != nil {
			t.Fatal(err)
		}
		sc, err := w.Score(&task, learn.Settings(cfg, true).Norm, cfg.Meta.TestPruneThreshold, cfg.Meta.EvalBN != config.BNEval)
		if err != nil {
			t.Fatal(err)
		}
		want := res.PerTask[i]
		if math.Abs(sc.Accuracy-want.Accuracy) > 1e-9 || sc.Genotype != want.Genotype || sc.ActiveParams != want.ActiveParams {
			t.Errorf("task %d: AdaptTask+Score gives %+v, MetaTest %+v", i, sc, want)
		}
	}
	if _, _, err := tr.AdaptTask(epoch, -1); err == nil || !IsUsage(err) {
		t.Errorf("negative task index: %v, want a usage error", err)
	}
}
