package train

import (
	"fmt"

	"github.com/metanas-go/metanas/metanas/data"
	"github.com/metanas-go/metanas/metanas/learn"
)

// testSamplerSeed is the seed of the meta-test task stream, shared by MetaTest and TestTask.
func (t *Trainer) testSamplerSeed() uint64 { return uint64(t.Cfg.Run.Seed) + 1000003 }

// TestTask returns meta-test task i: the task MetaTest scores as its i-th.
func (t *Trainer) TestTask(i int) (data.Task, error) {
	cfg := t.Cfg
	if i < 0 {
		return data.Task{}, usage("meta-test task index must be >= 0, got %d", i)
	}
	sampler, err := data.NewSampler(t.Split.Test, cfg.Data.Ways, cfg.Data.Shots, cfg.Data.Queries, t.testSamplerSeed())
	if err != nil {
		return data.Task{}, usage("meta-test: %v", err)
	}
	return sampler.Task(uint64(i)), nil
}

// AdaptTask adapts a copy of the meta-model to meta-test task i exactly as MetaTest(epoch,
// ...) adapts its i-th task (the same task, settings and random stream), on the first
// worker, and returns that worker, which holds the adapted network (and its final
// temperature, Worker.Temp) until the trainer's next use, and the task. Score it with
// w.Score(&task, settings.Norm, cfg.Meta.TestPruneThreshold, cfg.Meta.EvalBN != BNEval),
// settings being learn.Settings(cfg, true), to get MetaTest's result for the task.
func (t *Trainer) AdaptTask(epoch, i int) (*learn.Worker, data.Task, error) {
	task, err := t.TestTask(i)
	if err != nil {
		return nil, data.Task{}, err
	}
	w := t.Workers[0]
	if err := w.Load(t.Meta); err != nil {
		return nil, data.Task{}, err
	}
	w.SeedTask(taskSeed(t.Cfg.Run.Seed, 1, epoch, i))
	if _, err := w.Adapt(&task, learn.Settings(t.Cfg, true), true); err != nil {
		return nil, data.Task{}, fmt.Errorf("meta-test task %d: %w", i, err)
	}
	return w, task, nil
}
