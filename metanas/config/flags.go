package config

import (
	"strconv"

	"github.com/spf13/pflag"
)

// Flags are the command-line flags every metanas command shares. BindFlags
// registers them; after parsing, Apply or Resolve lays them over a
// configuration, so flags override the YAML file.
type Flags struct {
	// Config is the YAML file (--config, -c); empty means Default.
	Config string
	// Data is the data set directory (--data), overriding data.dir.
	Data string
	// Device is the device (--device), overriding run.device.
	Device string
	// Out is the run directory (--out), overriding run.out.
	Out string
	// Seed is the random seed (--seed), overriding run.seed.
	Seed int64
	// Sets are the section.key=value overrides (--set, repeatable), applied
	// in order.
	Sets []string

	fs *pflag.FlagSet
}

// BindFlags registers --config/-c, --data, --device, --out, --seed and the
// repeatable --set on fs and returns where their values land.
func BindFlags(fs *pflag.FlagSet) *Flags {
	f := &Flags{fs: fs}
	fs.StringVarP(&f.Config, "config", "c", "", "YAML configuration file, for example configs/og_metanas.yaml (default: built-in og_metanas settings)")
	fs.StringVar(&f.Data, "data", "", "data set directory (overrides data.dir)")
	fs.StringVar(&f.Device, "device", "", "device: cpu, cuda or cuda:N (overrides run.device)")
	fs.StringVar(&f.Out, "out", "", "run directory for logs and checkpoints (overrides run.out)")
	fs.Int64Var(&f.Seed, "seed", 0, "random seed (overrides run.seed)")
	// StringArray, not StringSlice: list values such as [1,3] contain commas.
	fs.StringArrayVar(&f.Sets, "set", nil, "override one setting as section.key=value, for example task.w_lr=0.01 or model.reductions=[1,3]; repeatable")
	return f
}

// given reports whether the flag name was set on the command line (or, for
// Flags not made by BindFlags, holds a non-zero value).
func (f *Flags) given(name string, nonZero bool) bool {
	if f.fs != nil {
		return f.fs.Changed(name)
	}
	return nonZero
}

// Apply lays the flags given on the command line over c: every --set in
// order, then --data, --device, --out and --seed, so a named flag wins over a
// --set of the same field. It stops at the first bad --set, returning its
// *Error or Errors; c keeps the overrides applied before it.
func (f *Flags) Apply(c *Config) error {
	for _, kv := range f.Sets {
		if err := c.Set(kv); err != nil {
			return err
		}
	}
	named := []struct {
		flag, field, value string
		given              bool
	}{
		{"data", "data.dir", f.Data, f.given("data", f.Data != "")},
		{"device", "run.device", f.Device, f.given("device", f.Device != "")},
		{"out", "run.out", f.Out, f.given("out", f.Out != "")},
		{"seed", "run.seed", strconv.FormatInt(f.Seed, 10), f.given("seed", f.Seed != 0)},
	}
	for _, n := range named {
		if !n.given {
			continue
		}
		if err := c.setPath(n.field, n.value, "--"+n.flag+" "+n.value); err != nil {
			return err
		}
	}
	return nil
}

// Resolve builds the configuration the flags describe: the --config file
// (or Default), then Apply, then Validate. Any error is an *Error or Errors.
func (f *Flags) Resolve() (Config, error) {
	cfg := Default()
	if f.Config != "" {
		var err error
		if cfg, err = Load(f.Config); err != nil {
			return Config{}, err
		}
	}
	if err := f.Apply(&cfg); err != nil {
		return Config{}, err
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}
