// Command opbench measures what one tensor operation costs when issued from Go through the
// torch package, against the same work issued from a C++ program (the floor) and from Python
// PyTorch, in one run:
//
//	go run ./cmd/opbench [--device cpu|cuda] [--iters N] [--trials N] [--threads N] [--case all|chain|conv]
//
// Cases (identical in the three languages):
//
//	chain  x is a 64x28 float32 tensor that requires grad; y = x; 200 times y = relu(y*w + b);
//	       y.sum().backward(). 600 forward ops per iteration (mul, add, relu; sum and backward
//	       are timed but not counted).
//	conv   conv2d 3x3, padding 1, of a 20x28x28x28 input with a 28x28x3x3 weight that requires
//	       grad; out.sum().backward(). 1 forward op per iteration.
//
// Cost per op = wall time of whole iterations (forward, sum, backward, freeing) divided by the
// forward ops of an iteration. A trial times --iters iterations. The Go version runs in one
// Scope that is Reset after every iteration: no finalizers, no scope per iteration.
//
// The C++ version is build/bin/opchain (make -f third_party/native.mk build/bin/opchain), the
// Python one third_party/bench/opchain.py, run with the first python3 that imports torch
// (python3 on PATH, then /usr/bin/python3); a missing one is reported as "skipped: reason".
// Both run as child processes that serve one trial per request, so that the trials of the
// three interleave (Go, C++, Python, then C++, Python, Go, ...): on a shared machine a load
// change hits all three alike. Each reports the median over its trials; go_over_cpp and
// python_over_cpp are medians of the ratios of trials run back to back, and the *_cpu_*
// values use the CPU time of each process instead of wall time.
//
// Output: one JSON line describing the machine (CPU model, cores, LibTorch version, date, git
// commit), then one JSON line per case:
//
//	{"case":"chain","go_us_per_op":…,"cpp_us_per_op":…,"python_us_per_op":…,"go_over_cpp":…,…}
//
// --markdown also prints a Markdown table of the results to stderr.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strings"

	"github.com/spf13/pflag"

	"github.com/metanas-go/metanas/internal/cli"
	"github.com/metanas-go/metanas/torch"
)

const prog = "opbench"

// options are the command's flags.
type options struct {
	device     string
	cases      []string
	iters      int
	trials     int
	warmup     int
	threads    int
	cpp        string
	python     string
	script     string
	noGC       bool
	eagerFree  bool
	cpuProfile string
	cppPool    bool
	markdown   bool
}

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	var o options
	fs := pflag.NewFlagSet(prog, pflag.ContinueOnError)
	fs.StringVar(&o.device, "device", "cpu", "cpu, cuda or cuda:N")
	which := fs.String("case", "all", "chain, conv or all")
	fs.IntVar(&o.iters, "iters", 0, "iterations per trial (0: chain 50; conv 10 on CPU, 200 on CUDA)")
	fs.IntVar(&o.trials, "trials", 15, "timed trials of each implementation, interleaved")
	fs.IntVar(&o.warmup, "warmup", -1, "untimed iterations before the first trial (-1: 2*iters)")
	fs.IntVar(&o.threads, "threads", 0, "LibTorch intra-op threads for all three (0: LibTorch's default, as opchain reports it)")
	fs.StringVar(&o.cpp, "cpp", "", "the C++ benchmark binary (default: build/bin/opchain of this checkout)")
	fs.StringVar(&o.python, "python", "", "Python interpreter with torch (default: python3 on PATH, else /usr/bin/python3)")
	fs.StringVar(&o.script, "script", "", "the Python benchmark (default: third_party/bench/opchain.py of this checkout)")
	fs.BoolVar(&o.noGC, "no-gc", false, "turn Go's garbage collector off while Go is timed (to measure what GC costs)")
	fs.BoolVar(&o.eagerFree, "eager-free", false, "Go chain frees each mul and add result once consumed, as C++ does (diagnostic)")
	fs.BoolVar(&o.cppPool, "cpp-pool", false, "the C++ program's CPU tensors come from the shim's pool too (loaded with LD_PRELOAD), to tell the pool's gain from the Go binding's cost (diagnostic)")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a Go CPU profile of the run to this file")
	fs.BoolVar(&o.markdown, "markdown", false, "also print a Markdown table of the results to stderr")
	if code, done := cli.Parse(fs, prog, args); done {
		return code
	}
	switch *which {
	case "all":
		o.cases = []string{"chain", "conv"}
	case "chain", "conv":
		o.cases = []string{*which}
	default:
		return cli.Errorf(prog, cli.Usage, fmt.Errorf("--case %q: use chain, conv or all", *which))
	}
	if o.iters < 0 || o.trials < 1 || o.threads < 0 || o.warmup < -1 {
		return cli.Errorf(prog, cli.Usage, errors.New("--iters and --threads must be >= 0, --trials >= 1, --warmup >= -1"))
	}
	dev, err := torch.ParseDevice(o.device)
	if err != nil {
		return cli.Errorf(prog, cli.Usage, err)
	}
	if err := dev.Check(); err != nil {
		return cli.Errorf(prog, cli.Usage, err)
	}
	o.device = dev.String()
	if err := bench(o, dev); err != nil {
		return cli.Errorf(prog, cli.Fail, err)
	}
	return cli.OK
}

// result is one case measured the three ways. A *_us_per_op value is the median over the
// trials of wall time per forward op in microseconds, or the string "skipped: reason"; the
// *_cpu_us_per_op values are the same for the process's CPU time; *_min_* the best trial.
type result struct {
	Case          string    `json:"case"`
	Device        string    `json:"device"`
	OpsPerIter    int       `json:"ops_per_iter"`
	Iters         int       `json:"iters"`
	Trials        int       `json:"trials"`
	Threads       int       `json:"threads"`
	GoUsPerOp     any       `json:"go_us_per_op"`
	CppUsPerOp    any       `json:"cpp_us_per_op"`
	PythonUsPerOp any       `json:"python_us_per_op"`
	GoOverCpp     any       `json:"go_over_cpp"`
	PythonOverCpp any       `json:"python_over_cpp"`
	GoCPU         any       `json:"go_cpu_us_per_op"`
	CppCPU        any       `json:"cpp_cpu_us_per_op"`
	PythonCPU     any       `json:"python_cpu_us_per_op"`
	GoOverCppCPU  any       `json:"go_over_cpp_cpu"`
	GoMin         any       `json:"go_min_us_per_op"`
	CppMin        any       `json:"cpp_min_us_per_op"`
	PythonMin     any       `json:"python_min_us_per_op"`
	GoAllocsPerOp float64   `json:"go_allocs_per_op"` // Go heap allocations per forward op
	GoGCs         uint32    `json:"go_gcs"`           // Go garbage collections during Go's trials
	GoTrials      []float64 `json:"go_trial_us_per_op"`
	CppTrials     []float64 `json:"cpp_trial_us_per_op,omitempty"`
	PythonTrials  []float64 `json:"python_trial_us_per_op,omitempty"`
}

// series collects the trials of one implementation; wall[i] and cpu[i] belong to trial i.
type series struct {
	wall, cpu []float64
	skipped   string
}

func (s *series) add(wall, cpu float64) {
	s.wall = append(s.wall, wall)
	s.cpu = append(s.cpu, cpu)
}

func (s *series) value() any    { return s.stat(s.wall, median) }
func (s *series) cpuValue() any { return s.stat(s.cpu, median) }

func (s *series) min() any {
	if s.skipped != "" {
		return nil
	}
	return s.stat(s.wall, minOf)
}

func (s *series) stat(xs []float64, f func([]float64) float64) any {
	if s.skipped != "" {
		return "skipped: " + s.skipped
	}
	if len(xs) == 0 {
		return nil
	}
	return round4(f(xs))
}

// pairedRatio returns the median of a[i]/b[i] over the trials both have, or nil.
func pairedRatio(a, b []float64, aSkipped, bSkipped string) any {
	n := min(len(a), len(b))
	if aSkipped != "" || bSkipped != "" || n == 0 {
		return nil
	}
	r := make([]float64, n)
	for i := range r {
		r[i] = a[i] / b[i]
	}
	return round4(median(r))
}

func bench(o options, dev torch.Device) error {
	root := findRoot()
	env := describe(root, o)
	cpp := newCpp(root, o)
	py := newPython(root, o)

	threads := o.threads
	if threads == 0 {
		threads = cpp.defaultThreads()
	}
	if threads == 0 {
		threads = torch.NumThreads()
	}
	torch.SetNumThreads(threads)
	env.Threads = threads
	if env.LibTorch == "" {
		env.LibTorch = cpp.version
	}
	cpp.start(threads)
	py.start(threads)
	defer cpp.stop()
	defer py.stop()

	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	var results []result
	for _, c := range o.cases {
		r, err := benchCase(c, o, dev, threads, cpp, py)
		if err != nil {
			return err
		}
		results = append(results, r)
	}
	env.CppSkipped, env.PythonSkipped = cpp.skipped, py.skipped
	env.Python, env.PythonTorch = py.interp, py.version
	line, _ := json.Marshal(env)
	fmt.Println(string(line))
	for _, r := range results {
		line, _ := json.Marshal(r)
		fmt.Println(string(line))
	}
	if o.markdown {
		printMarkdown(os.Stderr, env, results)
	}
	return nil
}

// benchCase runs the trials of case c, Go's interleaved with the children's.
func benchCase(c string, o options, dev torch.Device, threads int, cpp, py *external) (result, error) {
	iters := itersFor(c, o.iters, dev)
	warm := o.warmup
	if warm < 0 {
		warm = 2 * iters
	}
	g, err := newGoBench(c, dev, o.eagerFree)
	if err != nil {
		return result{}, fmt.Errorf("go %s: %w", c, err)
	}
	defer g.close()
	if err := g.warm(warm); err != nil {
		return result{}, fmt.Errorf("go %s: %w", c, err)
	}

	var gs, cs, ps series
	var allocs uint64
	var gcs uint32
	goTrial := func() error {
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		if o.noGC {
			defer debug.SetGCPercent(debug.SetGCPercent(-1))
		}
		wall, cpu, err := g.trial(iters)
		runtime.ReadMemStats(&m1)
		allocs += m1.Mallocs - m0.Mallocs
		gcs += m1.NumGC - m0.NumGC
		gs.add(wall, cpu)
		return err
	}
	extTrial := func(e *external, s *series) func() error {
		return func() error {
			w := 0
			if len(s.wall) == 0 {
				w = warm
			}
			if wall, cpu, ok := e.trial(c, iters, w); ok {
				s.add(wall, cpu)
			}
			return nil
		}
	}
	runners := []func() error{goTrial, extTrial(cpp, &cs), extTrial(py, &ps)}
	for t := 0; t < o.trials; t++ {
		for k := range runners {
			if err := runners[(t+k)%len(runners)](); err != nil {
				return result{}, fmt.Errorf("go %s: %w", c, err)
			}
		}
	}
	cs.skipped, ps.skipped = cpp.skipped, py.skipped
	return result{
		Case: c, Device: o.device, OpsPerIter: opsPerIter(c), Iters: iters, Trials: o.trials, Threads: threads,
		GoUsPerOp: gs.value(), CppUsPerOp: cs.value(), PythonUsPerOp: ps.value(),
		GoOverCpp:     pairedRatio(gs.wall, cs.wall, "", cs.skipped),
		PythonOverCpp: pairedRatio(ps.wall, cs.wall, ps.skipped, cs.skipped),
		GoCPU:         gs.cpuValue(), CppCPU: cs.cpuValue(), PythonCPU: ps.cpuValue(),
		GoOverCppCPU: pairedRatio(gs.cpu, cs.cpu, "", cs.skipped),
		GoMin:        gs.min(), CppMin: cs.min(), PythonMin: ps.min(),
		GoAllocsPerOp: round4(float64(allocs) / float64(o.trials*iters*opsPerIter(c))),
		GoGCs:         gcs,
		GoTrials:      round4s(gs.wall), CppTrials: round4s(cs.wall), PythonTrials: round4s(ps.wall),
	}, nil
}

// itersFor returns the iterations per trial of case c.
func itersFor(c string, iters int, dev torch.Device) int {
	switch {
	case iters > 0:
		return iters
	case c == "chain":
		return 50
	case dev.CUDA:
		return 200
	default:
		return 10
	}
}

// opsPerIter returns the forward ops of one iteration of case c.
func opsPerIter(c string) int {
	if c == "chain" {
		return 3 * chainSteps
	}
	return 1
}

func printMarkdown(w io.Writer, env envInfo, rs []result) {
	fmt.Fprintf(w, "\n| machine | date | commit | LibTorch | device | threads |\n|---|---|---|---|---|---|\n")
	fmt.Fprintf(w, "| %s, %d cores | %s | %s | %s | %s | %d |\n\n", env.CPU, env.Cores, env.Date, env.Commit, env.LibTorch, env.Device, env.Threads)
	fmt.Fprintf(w, "| case | Go µs/op | C++ µs/op | Python µs/op | Go / C++ | Python / C++ | CPU µs/op Go / C++ / Python | Go / C++ (CPU) | Go allocs/op |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rs {
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s / %s / %s | %s | %.2f |\n", r.Case, cell(r.GoUsPerOp), cell(r.CppUsPerOp), cell(r.PythonUsPerOp),
			cell(r.GoOverCpp), cell(r.PythonOverCpp), cell(r.GoCPU), cell(r.CppCPU), cell(r.PythonCPU), cell(r.GoOverCppCPU), r.GoAllocsPerOp)
	}
}

func cell(v any) string {
	switch x := v.(type) {
	case nil:
		return "–"
	case float64:
		if x >= 100 {
			return fmt.Sprintf("%.0f", x)
		}
		return fmt.Sprintf("%.2f", x)
	case string:
		return strings.TrimPrefix(x, "skipped: ")
	}
	return fmt.Sprint(v)
}
