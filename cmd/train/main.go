// Command train meta-trains MetaNAS (or a REPTILE baseline) from a YAML preset:
//
//	go run ./cmd/train --config configs/smoke.yaml [--data DIR] [--device cpu|cuda] [--out DIR] [--set key=value ...]
//
// The run directory receives the resolved config.yaml, metrics.jsonl, checkpoint.pt (at
// every meta-test, written atomically) and results.json (the final meta-test).
package main

import (
	"context"
	"encoding/json"
	"errors"
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
	resume := fs.String("resume", "", "continue from this checkpoint (ours, or a reference meta_state file with --config)")
	maxEpochs := fs.Int("max-epochs", 0, "stop after this many meta-epochs of this run (0: the configured number)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return cli.OK
		}
		return cli.Errorf(prog, cli.Usage, err)
	}
	if *resume != "" && flags.Config == "" {
		c, ok, err := train.ReadCheckpointConfig(*resume)
		if err != nil {
			return cli.Errorf(prog, cli.Usage, fmt.Errorf("--resume: %w", err))
		}
		if !ok {
			return cli.Errorf(prog, cli.Usage, fmt.Errorf("--resume %s holds no configuration (a reference checkpoint?): give its settings with --config", *resume))
		}
		dir, err := os.MkdirTemp("", "metanas-resume")
		if err != nil {
			return cli.Errorf(prog, cli.Fail, err)
		}
		defer os.RemoveAll(dir)
		b, _ := c.Marshal()
		flags.Config = dir + "/config.yaml"
		if err := os.WriteFile(flags.Config, b, 0o644); err != nil {
			return cli.Errorf(prog, cli.Fail, err)
		}
	}
	cfg, err := flags.Resolve()
	if err != nil {
		return cli.Errorf(prog, cli.Usage, err)
	}
	log := cli.Logger(os.Stderr)
	opts := train.Options{Resume: *resume, Log: log, MaxEpochs: *maxEpochs}
	if cli.IsTerminal(os.Stderr) {
		opts.Progress = os.Stderr
	}
	log.Info("starting", "config", flags.Config, "dataset", cfg.Data.Dataset, "ways", cfg.Data.Ways, "model", cfg.Model.Kind, "device", cfg.Run.Device, "out", cfg.Run.Out, "epochs", cfg.Meta.Epochs)
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
