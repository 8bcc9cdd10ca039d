package cells

import (
	"fmt"
	"math"

	"github.com/metanas-go/metanas/torch"
)

// CNNConfig describes the REPTILE/MAML baseline: Blocks x [conv3x3 (padding 1, with bias),
// batch norm (affine), ReLU, 2x2 max-pool], then a linear classifier on the flattened
// (channel-major) features.
type CNNConfig struct {
	InChannels int // 1 for Omniglot, 3 for MiniImagenet
	Size       int // input height = width (28 or 84); sizes the linear layer
	Classes    int // N ways
	Channels   int // filters per block (64)
	Blocks     int // conv blocks (4)
}

// DefaultCNNConfig is the reference's baseline for the given input and ways: 64 channels,
// 4 blocks.
func DefaultCNNConfig(inChannels, size, classes int) CNNConfig {
	return CNNConfig{InChannels: inChannels, Size: size, Classes: classes, Channels: 64, Blocks: 4}
}

// FinalSize returns the side of the feature map after the blocks: Size halved (rounding
// down) Blocks times.
func (c CNNConfig) FinalSize() int {
	s := c.Size
	for i := 0; i < c.Blocks; i++ {
		s /= 2
	}
	return s
}

// Validate reports the first invalid field by name.
func (c CNNConfig) Validate() error {
	switch {
	case c.InChannels <= 0:
		return fmt.Errorf("in_channels must be > 0, got %d", c.InChannels)
	case c.Size <= 0:
		return fmt.Errorf("size must be > 0, got %d", c.Size)
	case c.Classes < 1:
		return fmt.Errorf("classes must be >= 1, got %d", c.Classes)
	case c.Channels <= 0:
		return fmt.Errorf("channels must be > 0, got %d", c.Channels)
	case c.Blocks <= 0:
		return fmt.Errorf("blocks must be > 0, got %d", c.Blocks)
	case c.FinalSize() < 1:
		return fmt.Errorf("size %d is too small for %d max-pools of 2 (needs at least %d)", c.Size, c.Blocks, 1<<c.Blocks)
	}
	return nil
}

type cnnBlock struct {
	w, b *torch.Tensor
	bn   *BatchNorm
}

// CNN is the REPTILE/MAML 4-block baseline. Keys: conv{b}.0.weight, conv{b}.0.bias,
// conv{b}.1.* (batch norm), b = 1..Blocks, then logits.weight and logits.bias, as
// tools/pyref's cnn. Omniglot 20-way with 64 channels has 113,236 weights; the reference
// reports 113,256 because its model also carries four dummy [1, 5] alpha parameters
// (20 elements) that this network does not have.
type CNN struct {
	Cfg    CNNConfig
	Reg    *Registry
	blocks []cnnBlock
	linW   *torch.Tensor
	linB   *torch.Tensor
}

// NewCNN builds the baseline in scope s on dev, with PyTorch's default initialisation
// drawn from LibTorch's generator.
func NewCNN(s *torch.Scope, dev torch.Device, cfg CNNConfig) (*CNN, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("cnn: %w", err)
	}
	r := NewRegistry(s, dev)
	n := &CNN{Cfg: cfg, Reg: r}
	in, ch := int64(cfg.InChannels), int64(cfg.Channels)
	for b := 1; b <= cfg.Blocks; b++ {
		br := r.Sub(fmt.Sprintf("conv%d", b))
		conv := br.Sub("0")
		blk := cnnBlock{w: conv.ConvWeight("weight", ch, in, 1, 3, 3)}
		blk.b = conv.uniformWeight("bias", []int64{ch}, 1/math.Sqrt(float64(in*9)))
		blk.bn = NewBatchNorm(br.Sub("1"), ch, true)
		n.blocks = append(n.blocks, blk)
		in = ch
	}
	fs := int64(cfg.FinalSize())
	n.linW, n.linB = r.LinearWeights("logits", int64(cfg.Classes), ch*fs*fs)
	if err := r.Err(); err != nil {
		return nil, fmt.Errorf("cnn: %w", err)
	}
	return n, nil
}

// Forward computes logits for x [N, InChannels, Size, Size].
func (n *CNN) Forward(c *Ctx, x *torch.Tensor) *torch.Tensor {
	s := c.S
	h := x
	for _, b := range n.blocks {
		h = s.Conv2d(h, b.w, b.b, torch.Conv{Padding: [2]int64{1, 1}})
		h = s.MaxPool2d(s.Relu(b.bn.Forward(c, h)), 2, 2, 0)
	}
	return s.Linear(s.Flatten(h, 1, -1), n.linW, n.linB)
}

// Weights returns the network weights, in state_dict order.
func (n *CNN) Weights() []*torch.Tensor { return n.Reg.Select(Weight) }

// Buffers returns the batch-norm buffers, in state_dict order.
func (n *CNN) Buffers() []*torch.Tensor { return n.Reg.Select(Buffer) }
