package main

import (
	"fmt"
	"time"

	"github.com/metanas-go/metanas/torch"
)

// NodeResult is one line of --node-bench: a batched search node's batch norm over its
// members and its weighted sum, forward and backward (with the weights' gradient, as in a
// search step), unfused (torch's NodeBatchNorm then MixedTasksCoefs, CUDA's default) and
// fused (NodeNormSum, METANAS_NODE_FUSED=1), on random members of one og_metanas node's
// shape. FusedPassBytes is what the fused call's five passes over the members read and
// write at least (statistics, node, dot products, members' gradients), FusedGBps that
// over its whole time: how near the fused node comes to the device's bandwidth.
type NodeResult struct {
	Case           string  `json:"case"` // "node_sum"
	Device         string  `json:"device"`
	Machine        string  `json:"machine"`
	Date           string  `json:"date"`
	Commit         string  `json:"commit"`
	Precision      string  `json:"precision"`
	Samples        int64   `json:"samples"`
	Tasks          int64   `json:"tasks"`
	Channels       int64   `json:"channels"`
	Side           int64   `json:"side"`
	Members        int64   `json:"members"`
	Others         int64   `json:"others"` // outputs summed beside the members (identities)
	Iters          int     `json:"iters"`
	UnfusedMs      float64 `json:"unfused_ms"`
	FusedMs        float64 `json:"fused_ms"`
	Speedup        float64 `json:"speedup"`
	FusedPassBytes int64   `json:"fused_pass_bytes"`
	FusedGBps      float64 `json:"fused_gbps"`
}

// nodeShapes are og_metanas's batched nodes (batches of 10 tasks, 20 images): the first
// and last node of the first normal cell (28x28, C=28: 2 and 4 inputs, 6 members and an
// identity each), of the second normal cell (14x14, C=56), and the last reduction cell's
// first node (7x7, C=112: its 2 stride-2 inputs have no identity).
var nodeShapes = []struct{ C, side, members, others int64 }{
	{28, 28, 12, 2}, {28, 28, 24, 4}, {56, 14, 24, 4}, {112, 7, 14, 0},
}

// nodeBench measures every nodeShapes node iters times each way after two warming
// iterations, on device, in float32 or (precision "bf16") with bfloat16 members (under
// autocast, as a bf16 run's nodes).
func nodeBench(device, precision string, iters int) ([]NodeResult, error) {
	dev, err := torch.ParseDevice(device)
	if err != nil {
		return nil, err
	}
	dt, name := torch.Float32, "float32"
	if precision == "bf16" {
		dt, name = torch.BFloat16, "bf16"
	}
	if !torch.NodeNormSumOn(dev) {
		return nil, fmt.Errorf("the shim has no kernels of the fused node sum for %v (built without nvcc?)", dev)
	}
	const N, T = 20, 10
	var out []NodeResult
	for _, sh := range nodeShapes {
		r := NodeResult{Case: "node_sum", Device: device, Machine: machine(dev), Date: time.Now().UTC().Format("2006-01-02"),
			Commit: commit(), Precision: name, Samples: N, Tasks: T, Channels: sh.C, Side: sh.side, Members: sh.members,
			Others: sh.others, Iters: iters}
		unfused, fused, err := timeNode(dev, dt, N, T, sh.C, sh.side, sh.members, sh.others, iters)
		if err != nil {
			return nil, fmt.Errorf("node of %d members, C=%d, %dx%d: %w", sh.members, sh.C, sh.side, sh.side, err)
		}
		r.UnfusedMs, r.FusedMs = unfused*1e3, fused*1e3
		r.Speedup = unfused / fused
		esize := int64(4)
		if dt != torch.Float32 {
			esize = 2
		}
		S := N * T * sh.C * sh.side * sh.side * esize
		r.FusedPassBytes = 5*sh.members*S + 3*S
		r.FusedGBps = float64(r.FusedPassBytes) / fused / 1e9
		out = append(out, r)
	}
	return out, nil
}

// timeNode returns the seconds per forward and backward pass of one node, unfused and
// fused, alternating the two ways iteration by iteration.
func timeNode(dev torch.Device, dt torch.DType, N, T, C, side, members, others int64, iters int) (unfused, fused float64, err error) {
	s := torch.NewScope()
	defer s.Close()
	torch.ManualSeed(1)
	var leafErr error
	leaf := func(x *torch.Tensor) *torch.Tensor {
		x = s.Detach(x)
		if err := x.SetRequiresGrad(true); err != nil && leafErr == nil {
			leafErr = err
		}
		return x
	}
	var xs, rest []*torch.Tensor
	for i := int64(0); i < members; i++ {
		xs = append(xs, leaf(s.To(s.Randn([]int64{N, T * C, side, side}, dev, false), dt, dev)))
	}
	for i := int64(0); i < others; i++ {
		rest = append(rest, leaf(s.To(s.Randn([]int64{N, T * C, side, side}, dev, false), dt, dev)))
	}
	coefs := leaf(s.Rand([]int64{T, members + others}, dev))
	rm, rv := s.Zeros([]int64{T, members, C}, dev), s.Ones([]int64{T, members, C}, dev)
	drop := make([]bool, members+others)
	g := s.To(s.Randn([]int64{N, T * C, side, side}, dev, false), dt, dev)
	if err := s.Err(); err != nil {
		return 0, 0, err
	}
	if leafErr != nil {
		return 0, 0, leafErr
	}
	leaves := append(append([]*torch.Tensor{coefs}, xs...), rest...)
	pass := func(withFused bool) error {
		cs := s.Child()
		defer cs.Close()
		var node *torch.Tensor
		if withFused {
			node = cs.NodeNormSum(xs, rm, rv, nil, 0.1, 1e-5, rest, coefs, drop, 0, nil, T)
		} else {
			stacked := cs.NodeBatchNorm(xs, rm, rv, nil, T, true, 0.1, 1e-5)
			node = cs.MixedTasksCoefs(stacked, nil, rest, coefs, drop, 0, nil, T)
			stacked.Free()
		}
		if err := cs.Sum(cs.Mul(node, g)).Backward(); err != nil {
			return err
		}
		if err := cs.Err(); err != nil {
			return err
		}
		return torch.ZeroGrad(leaves, true)
	}
	took, err := alternate(dev, dt, iters, pass)
	return took[0], took[1], err
}

// alternate returns the seconds per call of pass(false) and pass(true), called in turn
// iters times each after two warming rounds, under autocast to dt where dt is not float32,
// each call waited for on CUDA.
func alternate(dev torch.Device, dt torch.DType, iters int, pass func(bool) error) ([2]float64, error) {
	var took [2]float64
	var d [2]time.Duration
	call := func(b bool) error {
		if dt != torch.Float32 {
			restore, err := torch.Autocast(dev, dt)
			if err != nil {
				return err
			}
			defer restore()
		}
		if err := pass(b); err != nil {
			return err
		}
		if dev.CUDA {
			return torch.Synchronize(dev)
		}
		return nil
	}
	for i := -2; i < iters; i++ {
		for k, b := range []bool{false, true} {
			start := time.Now()
			if err := call(b); err != nil {
				return took, err
			}
			if i >= 0 {
				d[k] += time.Since(start)
			}
		}
	}
	for k := range d {
		took[k] = d[k].Seconds() / float64(iters)
	}
	return took, nil
}

// DWResult is a line of --node-bench about a batched depthwise convolution of og_metanas's
// shapes, forward and backward (input and kernel gradients), with cuDNN's weight gradient
// and with the shim's (METANAS_DW_WGRAD=1), on CUDA.
type DWResult struct {
	Case      string  `json:"case"` // "dw_conv"
	Device    string  `json:"device"`
	Machine   string  `json:"machine"`
	Date      string  `json:"date"`
	Commit    string  `json:"commit"`
	Precision string  `json:"precision"`
	Samples   int64   `json:"samples"`
	Channels  int64   `json:"channels"` // edges x tasks x C, as one grouped convolution
	Side      int64   `json:"side"`
	Stride    int64   `json:"stride"`
	Dilation  int64   `json:"dilation"`
	Iters     int     `json:"iters"`
	CuDNNMs   float64 `json:"cudnn_ms"`
	ShimMs    float64 `json:"shim_ms"`
	Speedup   float64 `json:"speedup"`
}

// dwShapes are depthwise convolutions of og_metanas's batched cells (10 tasks, 20 images):
// sep_conv's first 3x3 on two edges of the first normal cell (28x28, C=28), dil_conv's
// (dilation 2), a reduction cell's stride-2 ones on 28x28 inputs, and sep_conv's on the
// second normal cell's four edges (14x14, C=56).
var dwShapes = []struct{ channels, side, stride, dil int64 }{
	{2 * 10 * 28, 28, 1, 1}, {2 * 10 * 28, 28, 1, 2}, {2 * 10 * 28, 28, 2, 1}, {4 * 10 * 56, 14, 1, 1},
}

// dwBench times every dwShapes convolution iters times with each weight gradient, on a
// CUDA device (nil elsewhere: the shim's is CUDA's only).
func dwBench(device, precision string, iters int) ([]DWResult, error) {
	dev, err := torch.ParseDevice(device)
	if err != nil || !dev.CUDA {
		return nil, err
	}
	dt, name := torch.Float32, "float32"
	if precision == "bf16" {
		dt, name = torch.BFloat16, "bf16"
	}
	defer torch.SetDepthwiseWeightGrad(torch.SetDepthwiseWeightGrad(false))
	const N = 20
	var out []DWResult
	for _, sh := range dwShapes {
		r := DWResult{Case: "dw_conv", Device: device, Machine: machine(dev), Date: time.Now().UTC().Format("2006-01-02"),
			Commit: commit(), Precision: name, Samples: N, Channels: sh.channels, Side: sh.side, Stride: sh.stride,
			Dilation: sh.dil, Iters: iters}
		took, err := timeDW(dev, dt, N, sh.channels, sh.side, sh.stride, sh.dil, iters)
		if err != nil {
			return nil, fmt.Errorf("depthwise convolution of %d channels, %dx%d: %w", sh.channels, sh.side, sh.side, err)
		}
		r.CuDNNMs, r.ShimMs = took[0]*1e3, took[1]*1e3
		r.Speedup = took[0] / took[1]
		out = append(out, r)
	}
	return out, nil
}

// timeDW returns the seconds per forward and backward pass of one depthwise convolution
// with cuDNN's weight gradient and with the shim's, alternating iteration by iteration.
func timeDW(dev torch.Device, dt torch.DType, N, C, side, stride, dil int64, iters int) ([2]float64, error) {
	s := torch.NewScope()
	defer s.Close()
	torch.ManualSeed(1)
	x := s.Detach(s.Randn([]int64{N, C, side, side}, dev, false))
	w := s.Detach(s.Randn([]int64{C, 1, 3, 3}, dev, false))
	for _, p := range []*torch.Tensor{x, w} {
		if err := p.SetRequiresGrad(true); err != nil {
			return [2]float64{}, err
		}
	}
	geom := torch.Conv{Stride: [2]int64{stride, stride}, Padding: [2]int64{dil, dil}, Dilation: [2]int64{dil, dil}, Groups: C}
	pass := func(shim bool) error {
		torch.SetDepthwiseWeightGrad(shim)
		cs := s.Child()
		defer cs.Close()
		y := cs.Conv2d(x, w, nil, geom)
		if err := cs.Sum(cs.Mul(y, y)).Backward(); err != nil {
			return err
		}
		if err := cs.Err(); err != nil {
			return err
		}
		return torch.ZeroGrad([]*torch.Tensor{x, w}, true)
	}
	return alternate(dev, dt, iters, pass)
}
