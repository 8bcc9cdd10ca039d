package main

import (
	"strings"
	"testing"
)

func TestParseGPUApps(t *testing.T) {
	for _, c := range []struct {
		name string
		csv  string
		pid  int
		want float64
	}{
		{"one line", "4242, 1536\n", 4242, 1536},
		{"other processes ignored", "17, 900\n4242, 1536\n99, 12\n", 4242, 1536},
		{"two GPUs summed", "4242, 1000\n4242, 24\n", 4242, 1024},
		{"not listed", "17, 900\n", 4242, -1},
		{"empty", "", 4242, -1},
		{"not a number", "4242, [N/A]\n", 4242, -1},
	} {
		if got := parseGPUApps(c.csv, c.pid); got != c.want {
			t.Errorf("%s: parseGPUApps(%q, %d) = %g, want %g", c.name, c.csv, c.pid, got, c.want)
		}
	}
}

// TestMemoryBatched runs the memory benchmark for a few meta-epochs with two tasks at a
// time as one batched network, and checks what it reports.
func TestMemoryBatched(t *testing.T) {
	r, err := memory("../../configs", "cpu", 3, 2, false)
	if err != nil {
		t.Fatal(err)
	}
	if r.Epochs != 3 || r.BatchTasks != 2 || r.CUDAGraphs || r.RSSAt50MiB <= 0 || r.RSSEndMiB <= 0 || r.GPUAt50MiB != 0 {
		t.Errorf("memory result %+v: want 3 epochs of batches of 2 on the CPU, resident memory sampled", r)
	}
	if r.LiveTensors != 0 {
		t.Errorf("%d tensor handles more after the run than after its first meta-epoch", r.LiveTensors)
	}
	if _, err := memory("../../configs", "cpu", 3, 3, false); err == nil || !strings.Contains(err.Error(), "run.batch_tasks") {
		t.Errorf("batches of 3 of a meta-batch of 4: error %v, want one naming run.batch_tasks", err)
	}
}
