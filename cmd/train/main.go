// Command train meta-trains MetaNAS (or a REPTILE baseline) from a YAML preset:
//
//	go run ./cmd/train --config configs/smoke.yaml [--data DIR] [--device cpu|cuda] [--out DIR] [--set key=value ...]
//
// The run directory receives the resolved config.yaml, metrics.jsonl, checkpoint.pt (at
// every meta-test, written atomically) and results.json (the final meta-test).
//
// --resume continues from a checkpoint: ours (its stored configuration unless --config is
// given) or a reference meta_state file, whose architecture is inferred from its tensor
// shapes (train.InferConfig) unless --config is given; meta-epochs then count from 1. Bad
// input exits with status 2, naming the file and key, before anything is written.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"

	"github.com/spf13/pflag"

	"github.com/metanas-go/metanas/internal/cli"
	"github.com/metanas-go/metanas/metanas/config"
	"github.com/metanas-go/metanas/metanas/train"
)

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	const prog = "train"
	fs := pflag.NewFlagSet(prog, pflag.ContinueOnError)
	flags := config.BindFlags(fs)
	resume := fs.String("resume", "", "continue from this checkpoint: ours, or a reference meta_state file (architecture inferred from its shapes unless --config is given; its task optimizer state is loaded with task.optim_state=keep)")
	maxEpochs := fs.Int("max-epochs", 0, "stop after this many meta-epochs of this run (0: the configured number)")
	if code, done := cli.Parse(fs, prog, args); done {
		return code
	}
	// Resuming: the configuration is --config when given, else the checkpoint's own, else
	// (a reference checkpoint) inferred from its tensor shapes; the flags apply on top.
	var (
		cfg config.Config
		src train.ConfigSource
		err error
	)
	if *resume != "" {
		cfg, src, err = train.CheckpointConfig(*resume, flags)
		if err != nil {
			return cli.Errorf(prog, cli.Usage, fmt.Errorf("--resume: %w", err))
		}
	} else if cfg, err = flags.Resolve(); err != nil {
		return cli.Errorf(prog, cli.Usage, err)
	}
	log := cli.Logger(os.Stderr)
	opts := train.Options{Resume: *resume, Log: log, MaxEpochs: *maxEpochs}
	if cli.IsTerminal(os.Stderr) {
		opts.Progress = os.Stderr
	}
	log.Info("starting", "config", flags.Config, "config_source", string(src), "dataset", cfg.Data.Dataset, "ways", cfg.Data.Ways, "model", cfg.Model.Kind, "device", cfg.Run.Device, "out", cfg.Run.Out, "epochs", cfg.Meta.Epochs)
	t, err := train.New(cfg, opts)
	if err != nil {
		if train.IsUsage(err) {
			return cli.Errorf(prog, cli.Usage, err)
		}
		return cli.Errorf(prog, cli.Fail, err)
	}
	defer t.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res, err := t.Run(ctx)
	if err != nil {
		if train.IsUsage(err) {
			return cli.Errorf(prog, cli.Usage, err)
		}
		return cli.Errorf(prog, cli.Fail, err)
	}
	if res != nil {
		summary := map[string]any{"accuracy": res.Accuracy, "ci95": res.CI95, "tasks": res.Tasks,
			"distinct_architectures": res.Distinct, "mean_active_params": res.MeanParams, "out": cfg.Run.Out}
		b, _ := json.Marshal(summary)
		fmt.Println(string(b))
	}
	return cli.OK
}
