// Command evaluate meta-tests a checkpoint: for each of --tasks meta-test tasks it adapts
// weights and alphas, then weights only, hard-prunes, and scores the query set; it prints
// the mean accuracy with its 95% confidence interval, the per-task genotypes and pruned
// parameter counts, and how many distinct architectures appeared, as JSON.
//
//	go run ./cmd/evaluate --checkpoint runs/smoke/checkpoint.pt [--tasks 100] [--data DIR] [--set key=value ...]
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/pflag"

	"github.com/metanas-go/metanas/internal/cli"
	"github.com/metanas-go/metanas/metanas/config"
	"github.com/metanas-go/metanas/metanas/train"
)

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	const prog = "evaluate"
	fs := pflag.NewFlagSet(prog, pflag.ContinueOnError)
	flags := config.BindFlags(fs)
	ckpt := fs.String("checkpoint", "", "checkpoint to evaluate (ours, or a reference meta_state file with --config)")
	tasks := fs.Int("tasks", 0, "meta-test tasks (default meta.final_test_tasks)")
	perTask := fs.Bool("per-task", true, "include per-task results")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return cli.OK
		}
		return cli.Errorf(prog, cli.Usage, err)
	}
	if *ckpt == "" {
		return cli.Errorf(prog, cli.Usage, errors.New("--checkpoint FILE is required"))
	}
	var cfg config.Config
	if flags.Config == "" {
		c, ok, err := train.ReadCheckpointConfig(*ckpt)
		if err != nil {
			return cli.Errorf(prog, cli.Usage, fmt.Errorf("--checkpoint: %w", err))
		}
		if !ok {
			return cli.Errorf(prog, cli.Usage, fmt.Errorf("--checkpoint %s holds no configuration (a reference checkpoint?): give its settings with --config", *ckpt))
		}
		cfg = c
		if err := flags.Apply(&cfg); err != nil {
			return cli.Errorf(prog, cli.Usage, err)
		}
		if err := cfg.Validate(); err != nil {
			return cli.Errorf(prog, cli.Usage, err)
		}
	} else {
		var err error
		if cfg, err = flags.Resolve(); err != nil {
			return cli.Errorf(prog, cli.Usage, err)
		}
	}
	t, err := train.New(cfg, train.Options{Log: cli.Logger(os.Stderr)})
	if err != nil {
		return cli.Errorf(prog, exitCode(err), err)
	}
	defer t.Close()
	ck, err := train.LoadCheckpoint(*ckpt, t.Meta, nil, nil)
	if err != nil {
		return cli.Errorf(prog, cli.Usage, err)
	}
	n := *tasks
	if n <= 0 {
		n = cfg.Meta.FinalTestTasks
	}
	if n <= 0 {
		n = cfg.Meta.TestTasks
	}
	res, err := t.MetaTest(ck.MetaEpoch, n, *perTask)
	if err != nil {
		return cli.Errorf(prog, exitCode(err), err)
	}
	b, _ := json.MarshalIndent(res, "", "  ")
	fmt.Println(string(b))
	return cli.OK
}

func exitCode(err error) int {
	if train.IsUsage(err) {
		return cli.Usage
	}
	return cli.Fail
}
