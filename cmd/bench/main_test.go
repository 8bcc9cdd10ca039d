package main

import (
	"encoding/json"
	"maps"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/metanas-go/metanas/internal/testutil"
	"github.com/metanas-go/metanas/torch"
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

// TestMemoryBatched runs the memory benchmark for a few meta-epochs with two batches of two
// tasks side by side, each on a batched network, and checks what it reports.
func TestMemoryBatched(t *testing.T) {
	r, err := memory("../../configs", "cpu", 3, 2, 2, false)
	if err != nil {
		t.Fatal(err)
	}
	if r.Epochs != 3 || r.BatchTasks != 2 || r.BatchWorkers != 2 || r.CUDAGraphs || r.RSSAt50MiB <= 0 || r.RSSEndMiB <= 0 || r.GPUAt50MiB != 0 {
		t.Errorf("memory result %+v: want 3 epochs of two batches of 2 at once on the CPU, resident memory sampled", r)
	}
	if r.LiveTensors != 0 {
		t.Errorf("%d tensor handles more after the run than after its first meta-epoch", r.LiveTensors)
	}
	if _, err := memory("../../configs", "cpu", 3, 3, 0, false); err == nil || !strings.Contains(err.Error(), "run.batch_tasks") {
		t.Errorf("batches of 3 of a meta-batch of 4: error %v, want one naming run.batch_tasks", err)
	}
}

// TestTraceKernelsScript runs third_party/bench/trace_kernels.py (which summarises
// --kernel-trace files on GPU machines) on a hand-made trace: two overlapping kernels and a
// later one, a host event it must not count as a kernel, --extra keys, and the host
// operators around each kernel's launch (four nested, of which it names the outermost and
// the two innermost; one; none).
func TestTraceKernelsScript(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("no python3")
	}
	trace := filepath.Join(t.TempDir(), "trace.json")
	events := `{"traceEvents": [
		{"ph": "X", "cat": "kernel", "name": "a", "ts": 0, "dur": 10, "args": {"correlation": 1}},
		{"ph": "X", "cat": "kernel", "name": "b", "ts": 5, "dur": 10, "args": {"correlation": 2}},
		{"ph": "X", "cat": "kernel", "name": "a", "ts": 30, "dur": 5, "args": {"correlation": 3}},
		{"ph": "X", "cat": "cpu_op", "name": "outer", "pid": 1, "tid": 7, "ts": -100, "dur": 100},
		{"ph": "X", "cat": "cpu_op", "name": "mid", "pid": 1, "tid": 7, "ts": -99, "dur": 10},
		{"ph": "X", "cat": "cpu_op", "name": "inner", "pid": 1, "tid": 7, "ts": -98, "dur": 5},
		{"ph": "X", "cat": "cpu_op", "name": "deep", "pid": 1, "tid": 7, "ts": -97.5, "dur": 1},
		{"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 7, "ts": -97, "dur": 0.1, "args": {"correlation": 1}},
		{"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 7, "ts": -50, "dur": 0.1, "args": {"correlation": 2}},
		{"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 7, "ts": 20, "dur": 0.1, "args": {"correlation": 3}},
		{"ph": "X", "cat": "cpu_op", "name": "other thread", "pid": 1, "tid": 8, "ts": 0, "dur": 100},
		{"ph": "i", "cat": "kernel", "name": "instant", "ts": 40}]}`
	if err := os.WriteFile(trace, []byte(events), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(py, "../../third_party/bench/trace_kernels.py", trace, "--steps", "5", "--extra", `{"variant": "v"}`).Output()
	if err != nil {
		t.Fatalf("trace_kernels.py: %v", err)
	}
	var r struct {
		Variant   string             `json:"variant"`
		Kernels   int                `json:"kernels"`
		KernelMS  float64            `json:"kernel_ms"`
		BusyMS    float64            `json:"busy_ms"`
		SpanMS    float64            `json:"span_ms"`
		HostCalls map[string]int     `json:"host_calls"`
		PerStep   map[string]float64 `json:"per_step"`
		Top       []struct {
			Name    string         `json:"name"`
			Count   int            `json:"count"`
			MeanUS  float64        `json:"mean_us"`
			Origins map[string]int `json:"origins"`
		} `json:"top"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("output %q: %v", out, err)
	}
	// Busy: [0, 15] and [30, 35] merged = 20 us; span 0..35 us; kernel time 25 us.
	if r.Variant != "v" || r.Kernels != 3 || r.KernelMS != 0.025 || r.BusyMS != 0.02 || r.SpanMS != 0.035 ||
		r.HostCalls["cudaLaunchKernel"] != 3 || r.PerStep["kernels"] != 0.6 {
		t.Errorf("summary %+v", r)
	}
	if len(r.Top) != 2 || r.Top[0].Name != "a" || r.Top[0].Count != 2 || r.Top[0].MeanUS != 7.5 {
		t.Errorf("top kernels %+v, want a (2 calls, 7.5 us mean) first", r.Top)
	}
	wantOrigins := []map[string]int{{"outer > inner > deep": 1, "none": 1}, {"outer": 1}}
	for i, w := range wantOrigins {
		if i < len(r.Top) && !maps.Equal(r.Top[i].Origins, w) {
			t.Errorf("kernel %s: origins %v, want %v", r.Top[i].Name, r.Top[i].Origins, w)
		}
	}
}

// TestExperimentFields runs a short smoke case in batches of 2 tasks on the CPU and checks
// that its line names the GPU switches in effect: none here (the CPU's defaults); in a
// child process with METANAS_BRANCH_STREAMS=3, METANAS_POINTWISE=matmul,
// METANAS_NODE_BATCH_NORM=1 and METANAS_STATE_FUSION=1, the first three (branch streams
// turn the grouping off); in one with METANAS_STATE_FUSION=1 alone, the grouping.
func TestExperimentFields(t *testing.T) {
	want := map[string]any{}
	switch {
	case os.Getenv("METANAS_BRANCH_STREAMS") == "3":
		want = map[string]any{"branch_streams": 3.0, "pointwise_matmul": true, "node_batch_norm": true}
	case os.Getenv("METANAS_STATE_FUSION") == "1":
		want = map[string]any{"state_fusion": true}
	default:
		testutil.RerunWith(t, []string{"METANAS_BRANCH_STREAMS=3", "METANAS_POINTWISE=matmul", "METANAS_NODE_BATCH_NORM=1",
			"METANAS_STATE_FUSION=1"}, "^TestExperimentFields$", "TestExperimentFields")
		testutil.RerunWith(t, []string{"METANAS_STATE_FUSION=1"}, "^TestExperimentFields$", "TestExperimentFields")
	}
	code, out, errOut := testutil.Capture(t, func() int {
		return run([]string{"--configs", "../../configs", "--cases", "smoke", "--batch-tasks", "2", "--test-steps", "2"})
	})
	if code != 0 {
		t.Fatalf("bench exit %d: %s", code, errOut)
	}
	var line map[string]any
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &line); err != nil {
		t.Fatalf("bench line %q: %v", out, err)
	}
	for _, k := range []string{"branch_streams", "pointwise_matmul", "node_batch_norm", "state_fusion"} {
		if got, w := line[k], want[k]; got != w {
			t.Errorf("%s = %v, want %v (METANAS_BRANCH_STREAMS=%q)", k, got, w, os.Getenv("METANAS_BRANCH_STREAMS"))
		}
	}
	// On the CPU each part's peak of the tensor pool, below the part's resident peak, and
	// each part's resident peak, at most the whole run's (where Linux lets the process
	// reset its peak).
	pool, _ := line["cpu_pool_peak_mib"].(map[string]any)
	rss, _ := line["rss_peak_mib"].(map[string]any)
	for _, part := range []string{"warmup", "search", "meta_test"} {
		v, ok := pool[part].(float64)
		if r, _ := rss[part].(float64); torch.CPUPool().Enabled && (!ok || v <= 0 || (r > 0 && v >= r)) {
			t.Errorf("cpu_pool_peak_mib %v: %s missing or outside (0, its rss_peak_mib %v)", pool, part, rss[part])
		}
	}
	if !resetPeakRSS() {
		return
	}
	peaks, _ := line["rss_peak_mib"].(map[string]any)
	total, _ := line["peak_rss_mib"].(float64)
	for _, part := range []string{"warmup", "search", "meta_test"} {
		if v, ok := peaks[part].(float64); !ok || v <= 0 || v > total {
			t.Errorf("rss_peak_mib %v: %s missing or outside (0, peak_rss_mib %g]", peaks, part, total)
		}
	}
}

// TestProfileBytesField (in a child process: the count cannot be stopped): --profile-bytes
// reports each timed meta-epoch's traffic in traffic_gib and prints its table.
func TestProfileBytesField(t *testing.T) {
	if os.Getenv("METANAS_TEST_BENCH_BYTES") != "1" {
		testutil.RerunWith(t, []string{"METANAS_TEST_BENCH_BYTES=1"}, "^TestProfileBytesField$", "TestProfileBytesField")
		return
	}
	code, out, errOut := testutil.Capture(t, func() int {
		return run([]string{"--configs", "../../configs", "--cases", "smoke", "--tasks", "1", "--test-steps", "2", "--profile-bytes", "3"})
	})
	if code != 0 {
		t.Fatalf("bench exit %d: %s", code, errOut)
	}
	var line struct {
		Traffic map[string]float64 `json:"traffic_gib"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &line); err != nil {
		t.Fatalf("bench line %q: %v", out, err)
	}
	for _, part := range []string{"warmup", "search"} {
		if v := line.Traffic[part]; v <= 0 {
			t.Errorf("traffic_gib %v: %s missing or not positive", line.Traffic, part)
		}
	}
	if n := strings.Count(errOut, "GiB read and written by"); n != 2 || !strings.Contains(errOut, "aten::") {
		t.Errorf("stderr has %d traffic tables (want 2, naming ATen operators): %q", n, errOut)
	}
}

// TestNodeBench: --node-bench prints a line per node shape (two small ones here) for each
// precision, with both ways timed and the fused passes' bytes counted by hand.
func TestNodeBench(t *testing.T) {
	defer func(old []struct{ C, side, members, others int64 }) { nodeShapes = old }(nodeShapes)
	nodeShapes = []struct{ C, side, members, others int64 }{{3, 4, 5, 1}, {2, 3, 3, 0}}
	for _, p := range []string{"float32", "bf16"} {
		code, out, errOut := testutil.Capture(t, func() int { return run([]string{"--node-bench", "1", "--precision", p}) })
		if code != 0 {
			t.Fatalf("%s: bench exit %d: %s", p, code, errOut)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != len(nodeShapes) {
			t.Fatalf("%s: %d lines, want %d: %q", p, len(lines), len(nodeShapes), out)
		}
		esize := int64(4)
		if p == "bf16" {
			esize = 2
		}
		for i, l := range lines {
			var r NodeResult
			if err := json.Unmarshal([]byte(l), &r); err != nil {
				t.Fatalf("%s: line %q: %v", p, l, err)
			}
			sh := nodeShapes[i]
			S := 20 * 10 * sh.C * sh.side * sh.side * esize
			if r.Case != "node_sum" || r.Precision != p || r.Members != sh.members || r.Others != sh.others ||
				r.UnfusedMs <= 0 || r.FusedMs <= 0 || r.FusedPassBytes != 5*sh.members*S+3*S || r.FusedGBps <= 0 {
				t.Errorf("%s: line %d: %+v", p, i, r)
			}
		}
	}
}

// TestUsageErrors: flags that cannot work are refused with exit code 2 and a message that
// names them, before any case is measured.
func TestUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--profile-ops", "-1"}, "--profile-ops"},
		{[]string{"--profile-bytes", "-1"}, "--profile-bytes"},
		{[]string{"--kernel-trace-ops"}, "--kernel-trace-ops needs --kernel-trace"},
		{[]string{"--node-bench", "-1"}, "--node-bench"},
		{[]string{"--node-bench", "1", "--precision", "fp16"}, "--node-bench takes float32 or bf16"},
		// Refused by the case's settings, before its network is built.
		{[]string{"--configs", "../../configs", "--cases", "og_metanas", "--batch-workers", "2"}, "run.batch_workers: needs run.batch_tasks > 1"},
		{[]string{"--configs", "../../configs", "--cases", "og_metanas", "--precision", "fp16"}, "run.precision: unknown value \"fp16\""},
	} {
		code, _, errOut := testutil.Capture(t, func() int { return run(c.args) })
		if code != 2 || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", c.args, code, errOut, c.want)
		}
	}
}

// TestPhaseGrowth checks the growth within phases on samples every 50 meta-epochs of a
// 400-epoch run whose search starts at epoch 200.
func TestPhaseGrowth(t *testing.T) {
	for _, c := range []struct {
		name string
		v    map[int]float64 // sample by epoch (epoch 50 is the base)
		want float64
	}{
		{"flat", map[int]float64{50: 100, 100: 100, 150: 100, 200: 100, 250: 100, 300: 100, 350: 100, 400: 100}, 0},
		{"growth in warm-up", map[int]float64{50: 100, 100: 101, 150: 103, 200: 103, 250: 103, 300: 103, 350: 103, 400: 103}, 3},
		// A step at the switch (epoch 200) is the search's base from epoch 250 on.
		{"step at the switch", map[int]float64{50: 100, 100: 100, 150: 100, 200: 110, 250: 110, 300: 110, 350: 110, 400: 110}, 0},
		{"growth in the search", map[int]float64{50: 100, 100: 100, 150: 100, 200: 110, 250: 110, 300: 111, 350: 115.5, 400: 111}, 5},
		{"fall then growth", map[int]float64{50: 100, 100: 90, 150: 99, 200: 80, 250: 80, 300: 82, 350: 81, 400: 80}, 2.5},
		{"unmeasured samples", map[int]float64{50: 100, 100: -1, 150: 102, 200: -1, 250: -1, 300: 50, 350: 51, 400: 50}, 2},
	} {
		g := phaseGrowth{searchFrom: 200}
		for e := 50; e <= 400; e += 50 {
			g.add(e, c.v[e], e == 50)
		}
		if math.Abs(g.maxPct-c.want) > 1e-9 {
			t.Errorf("%s: %g %%, want %g %%", c.name, g.maxPct, c.want)
		}
	}
}
