package learn

import (
	"testing"

	"github.com/metanas-go/metanas/internal/testutil/torchtest"
	"github.com/metanas-go/metanas/torch"
)

// TestBatchWorkerMatchesWorkers adapts 3 tasks as one batch and one by one and compares
// every task's adapted weights, alphas, running statistics, support loss and accuracy, then
// the REPTILE update built from each, in the warm-up (weights only) and search phases.
func TestBatchWorkerMatchesWorkers(t *testing.T) {
	for _, tc := range []struct {
		name   string
		alphas bool
	}{{"warm-up", false}, {"search", true}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tinyConfig(t)
			for _, kv := range []string{"model.drop_path=0", "meta.meta_batch=3", "task.grad_clip=0.5"} {
				if err := cfg.Set(kv); err != nil {
					t.Fatal(err)
				}
			}
			const T = 3
			tasks := tinyTasks(t, cfg, T)
			ts := Settings(cfg, false)
			meta := newTestMeta(t, cfg, torch.CPU, 4)
			w := newTestWorker(t, cfg)
			single := NewReptile(meta)
			defer single.Close()
			if err := single.Begin(); err != nil {
				t.Fatal(err)
			}
			var want [][][]float32
			var wantRes []AdaptResult
			var wantScores []Score
			for i := range tasks {
				if err := w.Load(meta); err != nil {
					t.Fatal(err)
				}
				r, err := w.Adapt(&tasks[i], ts, tc.alphas)
				if err != nil {
					t.Fatal(err)
				}
				wantRes = append(wantRes, r)
				want = append(want, host(t, append(append(w.Model.Weights(), w.Model.Alphas()...), w.Model.Reg.RunningStats()...)))
				if err := single.Add(w, &tasks[i]); err != nil {
					t.Fatal(err)
				}
				// Scoring last: batch norm in training mode moves the running statistics.
				sc, err := w.Score(&tasks[i], ts.Norm, 0.05, true)
				if err != nil {
					t.Fatal(err)
				}
				wantScores = append(wantScores, sc)
			}
			b := newTestBatch(t, cfg, torch.CPU, T)
			if err := b.Load(meta); err != nil {
				t.Fatal(err)
			}
			res, err := b.Adapt(tasks, ts, tc.alphas)
			if err != nil {
				t.Fatal(err)
			}
			for i := range res {
				if !closeTo(float32(res[i].Loss), float32(wantRes[i].Loss), 1e-4) || res[i].Accuracy != wantRes[i].Accuracy {
					t.Errorf("task %d: batched loss %g accuracy %g, alone %g %g", i, res[i].Loss, res[i].Accuracy, wantRes[i].Loss, wantRes[i].Accuracy)
				}
			}
			got := host(t, append(append(b.Model.Weights(), b.Model.Alphas()...), b.Model.Reg.RunningStats()...))
			for p := range got {
				size := len(got[p]) / T
				for i := 0; i < T; i++ {
					for k := 0; k < size; k++ {
						if g, e := got[p][i*size+k], want[i][p][k]; !closeTo(g, e, 2e-4) {
							t.Fatalf("tensor %d task %d element %d: batched %g, alone %g", p, i, k, g, e)
						}
					}
				}
			}
			// REPTILE from the batch equals REPTILE from the tasks one by one.
			batched := NewReptile(meta)
			defer batched.Close()
			if err := batched.Begin(); err != nil {
				t.Fatal(err)
			}
			if err := batched.AddBatch(b); err != nil {
				t.Fatal(err)
			}
			scores, err := b.Score(tasks, ts.Norm, 0.05, true)
			if err != nil {
				t.Fatal(err)
			}
			for i, sc := range scores {
				if sc != wantScores[i] {
					t.Errorf("task %d: batched score %+v, alone %+v", i, sc, wantScores[i])
				}
			}
			if batched.acc.n != T {
				t.Fatalf("batched REPTILE counted %d tasks, want %d", batched.acc.n, T)
			}
			a1, a2 := host(t, single.acc.w), host(t, batched.acc.w)
			for p := range a1 {
				for k := range a1[p] {
					if !closeTo(a2[p][k], a1[p][k], 5e-4) {
						t.Fatalf("REPTILE sum, tensor %d element %d: batched %g, alone %g", p, k, a2[p][k], a1[p][k])
					}
				}
			}
		})
	}
}

// TestBatchWorkerNodeBatchNorm runs TestBatchWorkerMatchesWorkers again with
// METANAS_NODE_BATCH_NORM=1: the batch worker's network normalises each search node's ops
// with one batch norm, the single workers' networks op by op.
func TestBatchWorkerNodeBatchNorm(t *testing.T) {
	torchtest.RerunNodeBatchNormOther(t, "TestBatchWorkerMatchesWorkers", false)
}

// TestBatchWorkerErrors checks the batch's input checks.
func TestBatchWorkerErrors(t *testing.T) {
	cfg := tinyConfig(t)
	b := newTestBatch(t, cfg, torch.CPU, 2)
	tasks := tinyTasks(t, cfg, 3)
	if _, err := b.Adapt(tasks, Settings(cfg, false), true); err == nil {
		t.Error("3 tasks for a batch of 2: no error")
	}
	odd := tasks[:2]
	odd[1].SupportY = odd[1].SupportY[:1]
	if _, err := b.Adapt(odd, Settings(cfg, false), true); err == nil {
		t.Error("tasks of different support sizes: no error")
	}
	if err := cfg.Set("model.kind=cnn"); err != nil {
		t.Fatal(err)
	}
	if _, err := NewBatchWorker(cfg, torch.CPU, 2); err == nil {
		t.Error("batched CNN: no error")
	}
}
