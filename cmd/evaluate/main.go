// Command evaluate meta-tests a checkpoint: for each of --tasks meta-test tasks it adapts
// weights and alphas, then weights only, hard-prunes, and scores the query set; it prints
// the mean accuracy with its 95% confidence interval, the per-task genotypes and pruned
// parameter counts, and how many distinct architectures appeared, as JSON.
//
//	go run ./cmd/evaluate --checkpoint runs/smoke/checkpoint.pt [--tasks 100] [--data DIR] [--set key=value ...]
//
// The checkpoint may be ours or a reference meta_state file (Python's torch.save). Its
// configuration is --config when given, else the one it stores, else (the reference's)
// inferred from its tensor shapes over the defaults (see train.InferConfig); the other
// flags and --set apply on top. Bad input (an unreadable file, a checkpoint that does not
// fit the configuration) exits with status 2 and a message naming the file and key.
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
	ckpt := fs.String("checkpoint", "", "checkpoint to evaluate: ours, or a reference meta_state file (its architecture is inferred from the tensor shapes unless --config is given)")
	tasks := fs.Int("tasks", 0, "meta-test tasks (default meta.final_test_tasks)")
	perTask := fs.Bool("per-task", true, "include per-task results")
	if code, done := cli.Parse(fs, prog, args); done {
		return code
	}
	if *ckpt == "" {
		return cli.Errorf(prog, cli.Usage, errors.New("--checkpoint FILE is required"))
	}
	// The configuration: --config, else the checkpoint's own, else (a reference checkpoint)
	// inferred from its tensor shapes; --set and the other flags are laid over it.
	cfg, src, err := train.CheckpointConfig(*ckpt, flags)
	if err != nil {
		return cli.Errorf(prog, cli.Usage, fmt.Errorf("--checkpoint: %w", err))
	}
	log := cli.Logger(os.Stderr)
	log.Info("configuration", "source", string(src), "model", cfg.Model.Kind, "ways", cfg.Data.Ways)
	t, err := train.New(cfg, train.Options{Log: log})
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
