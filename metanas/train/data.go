package train

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/metanas-go/metanas/metanas/config"
	"github.com/metanas-go/metanas/metanas/data"
)

// UsageError is a problem with the user's input (missing data, bad settings): commands
// exit with status 2 on it.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

func usage(format string, a ...any) error { return &UsageError{Err: fmt.Errorf(format, a...)} }

// DataDir resolves where the data set is: data.dir (--data), else $METANAS_DATA, else
// ./data/<dataset>, else ../shared/data/<dataset>.
func DataDir(cfg config.Config) (string, error) {
	name := string(cfg.Data.Dataset)
	if cfg.Data.Dir != "" {
		if _, err := os.Stat(cfg.Data.Dir); err != nil {
			return "", usage("data directory %s (data.dir / --data): %v", cfg.Data.Dir, err)
		}
		return cfg.Data.Dir, nil
	}
	cands := []string{}
	if env := os.Getenv("METANAS_DATA"); env != "" {
		cands = append(cands, env, filepath.Join(env, name))
	}
	cands = append(cands, filepath.Join("data", name), filepath.Join("..", "shared", "data", name))
	for _, c := range cands {
		if st, err := os.Stat(c); err == nil && st.IsDir() {
			return c, nil
		}
	}
	if cfg.Data.Dataset == config.MiniImagenet {
		return "", usage("MiniImagenet not found: put its images/ folder and the Ravi & Larochelle train.csv, val.csv, test.csv (or train/, val/, test/ class folders) in ./data/miniimagenet, or pass --data DIR or set METANAS_DATA")
	}
	return "", usage("Omniglot not found: put the two canonical archives images_background.zip and images_evaluation.zip (from the Omniglot repository's python/ folder) in ./data/omniglot, or pass --data DIR or set METANAS_DATA (`make data` downloads them where a network is available)")
}

// LoadData loads the configured data set split.
func LoadData(cfg config.Config) (*data.Split, error) {
	d := cfg.Data
	switch d.Dataset {
	case config.Synthetic:
		sy := d.Synthetic
		split, err := data.SyntheticSplit(data.SyntheticOptions{Name: "synthetic", Classes: sy.Classes, PerClass: sy.PerClass,
			C: sy.Channels, H: sy.Size, W: sy.Size, Seed: uint64(cfg.Run.Seed) + 17}, 0, max(d.Ways, sy.Classes/4))
		if err != nil {
			return nil, usage("data.synthetic: %v", err)
		}
		return split, nil
	case config.MiniImagenet:
		dir, err := DataDir(cfg)
		if err != nil {
			return nil, err
		}
		split, err := data.LoadMiniImagenet(dir, data.MiniImagenetOptions{Size: d.ImageSize, Resize: data.ResizeMode(d.Resize)})
		if err != nil {
			return nil, usage("%v", err)
		}
		return split, nil
	default:
		dir, err := DataDir(cfg)
		if err != nil {
			return nil, err
		}
		opt := data.DefaultOmniglotOptions()
		if d.ImageSize > 0 {
			opt.Size = d.ImageSize
		}
		if d.Resize != "" {
			opt.Resize = data.ResizeMode(d.Resize)
		}
		opt.Rotations = d.Rotations
		opt.Vinyals = d.Vinyals
		opt.Invert = true // the reference (torchmeta) trains on white strokes on black
		split, err := data.LoadOmniglot(dir, opt)
		if err != nil {
			if errors.Is(err, data.ErrNotFound) || errors.Is(err, data.ErrBadImage) {
				return nil, usage("%v", err)
			}
			return nil, err
		}
		return split, nil
	}
}
