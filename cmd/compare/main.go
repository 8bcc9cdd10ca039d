// Command compare runs a checkpoint's network on an input batch for a side-by-side diff
// with PyTorch: it loads a checkpoint (ours or the reference's meta_state; the architecture
// from --config, the checkpoint, or inferred from the tensor shapes), reads the input from
// a torch.save({"x": tensor}) file, runs the network in eval mode (the one-shot network with
// alphas normalised by softmax at --temperature, ops and input pairs at or below
// --prune-threshold skipped) and writes {"logits": tensor} (plus "cell.<i>" with
// --per-cell) with torch.save's format. docs/compare.md has the PyTorch side.
//
//	go run ./cmd/compare --checkpoint FILE --input x.pt --output go.pt [--temperature 1] [--prune-threshold 0.01]
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/pflag"

	"github.com/metanas-go/metanas/cells"
	"github.com/metanas-go/metanas/internal/cli"
	"github.com/metanas-go/metanas/metanas/config"
	"github.com/metanas-go/metanas/metanas/learn"
	"github.com/metanas-go/metanas/metanas/train"
	"github.com/metanas-go/metanas/torch"
)

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	const prog = "compare"
	fs := pflag.NewFlagSet(prog, pflag.ContinueOnError)
	flags := config.BindFlags(fs)
	ckpt := fs.String("checkpoint", "", "checkpoint (ours, or the reference's meta_state)")
	input := fs.String("input", "", `input batch: a torch.save({"x": tensor [N, C, H, W]}) file`)
	output := fs.String("output", "", `where to write {"logits": tensor} with torch.save's format`)
	temp := fs.Float64("temperature", 1.0, "softmax temperature of the alphas")
	thr := fs.Float64("prune-threshold", 0.01, "ops and input pairs whose weight is at or below this are skipped")
	perCell := fs.Bool("per-cell", false, `also write every cell's output as "cell.<i>"`)
	force := fs.Bool("force", false, "overwrite an existing --output")
	if code, done := cli.Parse(fs, prog, args); done {
		return code
	}
	switch {
	case *ckpt == "":
		return cli.Errorf(prog, cli.Usage, errors.New("--checkpoint FILE is required"))
	case *input == "":
		return cli.Errorf(prog, cli.Usage, errors.New("--input FILE is required"))
	case *output == "":
		return cli.Errorf(prog, cli.Usage, errors.New("--output FILE is required"))
	case *temp <= 0:
		return cli.Errorf(prog, cli.Usage, fmt.Errorf("--temperature %g: must be > 0", *temp))
	}
	if _, err := os.Stat(*output); err == nil && !*force {
		return cli.Errorf(prog, cli.Usage, fmt.Errorf("--output %s exists: choose another file or pass --force", *output))
	}
	cfg, _, err := train.CheckpointConfig(*ckpt, flags)
	if err != nil {
		return cli.Errorf(prog, cli.Usage, err)
	}
	s := torch.NewScope()
	defer s.Close()
	model, err := learn.NewModel(s, torch.CPU, cfg)
	if err != nil {
		return cli.Errorf(prog, cli.Usage, fmt.Errorf("model: %w", err))
	}
	if _, err := train.LoadCheckpoint(*ckpt, model, nil, &cfg); err != nil {
		return cli.Errorf(prog, cli.Usage, err)
	}
	entries, err := torch.Load(s, *input)
	if err != nil {
		return cli.Errorf(prog, cli.Usage, err)
	}
	var x *torch.Tensor
	for _, e := range entries {
		if e.Name == "x" {
			x = e.Tensor
		}
	}
	if x == nil {
		return cli.Errorf(prog, cli.Usage, fmt.Errorf(`%s: no "x" entry (write it with torch.save({"x": tensor}, path))`, *input))
	}
	x = s.To(x, torch.Float32, torch.CPU)
	var out []torch.Named
	err = torch.NoGrad(func() error {
		c := &cells.Ctx{S: s}
		if model.Search == nil {
			y, _, err := model.Forward(c, x, learn.Arch{})
			if err != nil {
				return err
			}
			out = append(out, torch.Named{Name: "logits", Tensor: y})
			return nil
		}
		w, err := model.Search.Normalize(s, cells.Softmax, *temp)
		if err != nil {
			return err
		}
		y, cellOuts := model.Search.ForwardCells(c, x, w, *thr)
		out = append(out, torch.Named{Name: "logits", Tensor: y})
		if *perCell {
			for i, t := range cellOuts {
				out = append(out, torch.Named{Name: fmt.Sprintf("cell.%d", i), Tensor: t})
			}
		}
		return s.Err()
	})
	if err != nil {
		return cli.Errorf(prog, cli.Usage, fmt.Errorf("forward on %s: %w", *input, err))
	}
	if err := torch.Save(*output, out); err != nil {
		return cli.Errorf(prog, cli.Fail, err)
	}
	fmt.Fprintf(os.Stderr, "compare: wrote %s (%d tensors)\n", *output, len(out))
	return cli.OK
}
