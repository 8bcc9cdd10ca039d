package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/metanas-go/metanas/torch"
)

// envInfo is the first output line: where and with what the numbers were measured.
type envInfo struct {
	CPU            string `json:"cpu"`
	Cores          int    `json:"cores"`
	GPU            string `json:"gpu,omitempty"`
	Device         string `json:"device"`
	Threads        int    `json:"threads"`
	LibTorch       string `json:"libtorch"`
	LibTorchSource string `json:"libtorch_source,omitempty"`
	Go             string `json:"go"`
	// The Go side's CPU tensors come from the shim's pool (torch.CPUPool; METANAS_CPU_POOL=0
	// turns it off); with --cpp-pool the C++ program's do too.
	CPUPool       bool   `json:"cpu_pool"`
	CppCPUPool    bool   `json:"cpp_cpu_pool,omitempty"`
	Python        string `json:"python,omitempty"`
	PythonTorch   string `json:"python_torch,omitempty"`
	CppSkipped    string `json:"cpp_skipped,omitempty"`
	PythonSkipped string `json:"python_skipped,omitempty"`
	Date          string `json:"date"`
	Commit        string `json:"commit"`
	Dirty         bool   `json:"dirty"`
}

// findRoot returns the checkout's root: the folder above the working directory holding this
// module's go.mod, else the one two levels above the executable (build/bin/opbench), else
// the working directory.
func findRoot() string {
	wd, _ := os.Getwd()
	for d := wd; ; {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && bytes.Contains(b, []byte("module github.com/metanas-go/metanas\n")) {
			return d
		}
		up := filepath.Dir(d)
		if up == d {
			break
		}
		d = up
	}
	if exe, err := os.Executable(); err == nil {
		d := filepath.Dir(filepath.Dir(filepath.Dir(exe)))
		if _, err := os.Stat(filepath.Join(d, "third_party", "bench")); err == nil {
			return d
		}
	}
	return wd
}

// describe gathers the machine, LibTorch build, date and commit.
func describe(root string, o options) envInfo {
	e := envInfo{
		CPU:        cpuModel(),
		Cores:      runtime.NumCPU(),
		Device:     o.device,
		Go:         runtime.Version(),
		CPUPool:    torch.CPUPool().Enabled,
		CppCPUPool: o.cppPool,
		Date:       time.Now().UTC().Format(time.RFC3339),
		Commit:     "unknown",
	}
	if b, err := os.ReadFile(filepath.Join(root, "build", "libtorch.mk")); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "LT_VERSION="); ok {
				e.LibTorch = v
			}
			if v, ok := strings.CutPrefix(l, "LT_SOURCE="); ok {
				e.LibTorchSource = v
			}
		}
	}
	if out, err := output(root, 10*time.Second, "git", "rev-parse", "--short", "HEAD"); err == nil {
		e.Commit = strings.TrimSpace(out)
		if st, err := output(root, 10*time.Second, "git", "status", "--porcelain", "--untracked-files=no"); err == nil {
			e.Dirty = strings.TrimSpace(st) != ""
		}
	}
	if strings.HasPrefix(o.device, "cuda") {
		idx := strings.TrimPrefix(strings.TrimPrefix(o.device, "cuda"), ":")
		if idx == "" {
			idx = "0"
		}
		if out, err := output(root, 30*time.Second, "nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", idx); err == nil {
			e.GPU = strings.TrimSpace(out)
		}
	}
	return e
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

// output runs a command in dir and returns its standard output.
func output(dir string, timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if msg := lastLine(stderr.String()); msg != "" {
			return string(out), fmt.Errorf("%w: %s", err, msg)
		}
		return string(out), err
	}
	return string(out), nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// external is the C++ or Python version of the benchmark, a child process that runs one
// trial per request ("CASE ITERS WARMUP" on its stdin, one JSON line back), so that its trials
// interleave with Go's.
type external struct {
	impl    string   // "cpp" or "python"
	argv    []string // the command up to its flags
	root    string
	o       options
	interp  string // the Python interpreter
	version string // LibTorch or PyTorch version it reports
	threads int    // its default intra-op thread count (cpp only)
	skipped string // why it does not run, or ""

	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Scanner
	stderr bytes.Buffer
}

// line is one JSON line of opchain or opchain.py.
type line struct {
	Impl     string  `json:"impl"`
	Case     string  `json:"case"`
	Threads  int     `json:"threads"`
	LibTorch string  `json:"libtorch"`
	Wall     float64 `json:"wall_us_per_op"`
	CPU      float64 `json:"cpu_us_per_op"`
}

// newCpp finds build/bin/opchain (or --cpp) and asks it for its LibTorch version and
// default thread count.
func newCpp(root string, o options) *external {
	e := &external{impl: "cpp", root: root, o: o}
	path := o.cpp
	if path == "" {
		path = filepath.Join(root, "build", "bin", "opchain")
	}
	if _, err := os.Stat(path); err != nil {
		e.skipped = fmt.Sprintf("%s not found (build it: make -f third_party/native.mk build/bin/opchain)", path)
		return e
	}
	e.argv = []string{path}
	out, err := output(root, time.Minute, path, "--case", "info", "--device", o.device)
	if err != nil {
		e.skipped = fmt.Sprintf("%s --case info: %v", path, err)
		return e
	}
	for _, l := range parseLines(out) {
		if l.Case == "info" {
			e.version, e.threads = l.LibTorch, l.Threads
		}
	}
	return e
}

// newPython picks the interpreter (--python, else the first of python3 and /usr/bin/python3
// that imports torch, with CUDA when the device is CUDA) and finds opchain.py.
func newPython(root string, o options) *external {
	e := &external{impl: "python", root: root, o: o}
	script := o.script
	if script == "" {
		script = filepath.Join(root, "third_party", "bench", "opchain.py")
	}
	if _, err := os.Stat(script); err != nil {
		e.skipped = script + " not found"
		return e
	}
	cands := []string{"python3", "/usr/bin/python3"}
	if o.python != "" {
		cands = []string{o.python}
	}
	cuda := strings.HasPrefix(o.device, "cuda")
	var why []string
	for _, py := range cands {
		out, err := output(root, 2*time.Minute, py, "-c", "import torch; print(torch.__version__, int(torch.cuda.is_available()))")
		if err != nil {
			why = append(why, fmt.Sprintf("%s: %v", py, err))
			continue
		}
		f := strings.Fields(out)
		if len(f) != 2 {
			why = append(why, fmt.Sprintf("%s: unexpected answer %q", py, out))
			continue
		}
		if cuda && f[1] != "1" {
			why = append(why, fmt.Sprintf("%s: torch %s without CUDA", py, f[0]))
			continue
		}
		e.interp, e.version, e.argv = py, f[0], []string{py, script}
		return e
	}
	e.skipped = "no Python with torch: " + strings.Join(why, "; ")
	return e
}

// defaultThreads returns the C++ program's default intra-op thread count, or 0 if unknown.
func (e *external) defaultThreads() int {
	if e.skipped != "" {
		return 0
	}
	return e.threads
}

// start launches the child in serving mode with the given thread count.
func (e *external) start(threads int) {
	if e.skipped != "" {
		return
	}
	args := append(append([]string(nil), e.argv[1:]...), "--serve", "--device", e.o.device, "--threads", strconv.Itoa(threads))
	e.cmd = exec.Command(e.argv[0], args...)
	e.cmd.Dir = e.root
	if e.impl == "cpp" && e.o.cppPool {
		// The shim's static initializer installs the pool in the C++ program as in ours.
		// METANAS_CPU_POOL=1 overrides a 0 in this process's environment.
		e.cmd.Env = append(os.Environ(), "LD_PRELOAD="+filepath.Join(e.root, "build", "lib", "libmetanas_shim.so"), "METANAS_CPU_POOL=1")
	}
	e.cmd.Stderr = &e.stderr
	var err error
	if e.in, err = e.cmd.StdinPipe(); err == nil {
		var r io.ReadCloser
		if r, err = e.cmd.StdoutPipe(); err == nil {
			e.out = bufio.NewScanner(r)
			err = e.cmd.Start()
		}
	}
	if err != nil {
		e.fail(fmt.Errorf("start: %w", err))
	}
}

// trial runs iters timed iterations of case c after warmup untimed ones in the child.
func (e *external) trial(c string, iters, warmup int) (wall, cpu float64, ok bool) {
	if e.skipped != "" {
		return 0, 0, false
	}
	if _, err := fmt.Fprintf(e.in, "%s %d %d\n", c, iters, warmup); err != nil {
		e.fail(err)
		return 0, 0, false
	}
	for e.out.Scan() {
		ls := parseLines(e.out.Text())
		if len(ls) == 1 && ls[0].Case == c {
			return ls[0].Wall, ls[0].CPU, true
		}
	}
	e.fail(errors.New("no answer"))
	return 0, 0, false
}

// fail records why the child stopped and ends it.
func (e *external) fail(err error) {
	e.stop()
	msg := fmt.Sprintf("%s %s: %v", e.impl, strings.Join(e.argv, " "), err)
	if tail := lastLine(e.stderr.String()); tail != "" {
		msg += ": " + tail
	}
	e.skipped = msg
}

// stop ends the child: EOF on its stdin, then a kill if it does not exit.
func (e *external) stop() {
	if e.cmd == nil || e.cmd.Process == nil {
		return
	}
	if e.in != nil {
		e.in.Close()
	}
	done := make(chan struct{})
	go func() { e.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		e.cmd.Process.Kill()
		<-done
	}
	e.cmd = nil
}

// parseLines decodes the JSON lines of out, ignoring anything else.
func parseLines(out string) []line {
	var ls []line
	for _, s := range strings.Split(out, "\n") {
		var l line
		if strings.HasPrefix(strings.TrimSpace(s), "{") && json.Unmarshal([]byte(s), &l) == nil {
			ls = append(ls, l)
		}
	}
	return ls
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func minOf(xs []float64) float64 {
	m := math.Inf(1)
	for _, x := range xs {
		m = math.Min(m, x)
	}
	return m
}

func round4(x float64) float64 { return math.Round(x*1e4) / 1e4 }

func round4s(xs []float64) []float64 {
	r := make([]float64, len(xs))
	for i, x := range xs {
		r[i] = round4(x)
	}
	return r
}
