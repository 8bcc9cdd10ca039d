// Package config holds the configuration of a metanas-go run: the data set
// and task shape, the search space, the architecture normaliser, the task
// (inner-loop) and meta (outer-loop) optimisers, and run bookkeeping.
//
// A configuration is resolved in layers: Default, then a YAML file (Load),
// then command-line overrides (Set, or the flags bound by BindFlags), and is
// finally checked by Validate. Every problem is reported as an *Error that
// names the file or flag that supplied the value, the dotted field name
// (for example "task.w_lr") and what to do about it; commands should print it
// and exit with status 2.
//
// The defaults reproduce the reference og_metanas preset (MetaNAS on
// Omniglot 20-way, Elsken et al., CVPR 2020) with 1-shot meta-testing.
package config

// Dataset names a source of few-shot tasks.
type Dataset string

// Data sets.
const (
	// Omniglot is the Omniglot handwritten-character data set (1x28x28).
	Omniglot Dataset = "omniglot"
	// MiniImagenet is the MiniImagenet data set with the Ravi & Larochelle
	// split (3x84x84).
	MiniImagenet Dataset = "miniimagenet"
	// Synthetic is a generated data set whose shape is given by
	// DataConfig.Synthetic; it needs no files and is meant for tests.
	Synthetic Dataset = "synthetic"
)

// Resize names the interpolation used to scale images to the model input.
type Resize string

// Resize methods.
const (
	// ResizeBilinear is bilinear interpolation (what the reference's
	// torchvision Resize does).
	ResizeBilinear Resize = "bilinear"
	// ResizeArea averages the source pixels covered by each target pixel.
	ResizeArea Resize = "area"
)

// ModelKind names the meta-model architecture.
type ModelKind string

// Model kinds.
const (
	// ModelSearch is the one-shot search network with architecture
	// parameters (alphas): MetaNAS proper.
	ModelSearch ModelKind = "search"
	// ModelDiscrete is a fixed network built from ModelConfig.Genotype.
	ModelDiscrete ModelKind = "discrete"
	// ModelCNN is the 4-block convolutional baseline used by REPTILE/MAML.
	ModelCNN ModelKind = "cnn"
)

// PrimitiveSet names the list of candidate operations on each edge.
type PrimitiveSet string

// Primitive sets.
const (
	// PrimitivesFewShot is the MetaNAS few-shot set of seven operations.
	PrimitivesFewShot PrimitiveSet = "few_shot"
	// PrimitivesDARTS is the original DARTS set of eight operations.
	PrimitivesDARTS PrimitiveSet = "darts"
)

// Normalizer names the function that turns alphas into operation weights.
type Normalizer string

// Normalizers.
const (
	// NormSoftmax is softmax(alpha / T).
	NormSoftmax Normalizer = "softmax"
	// NormReLUSoftmax mixes a ReLU-normalised and a softmax weighting.
	NormReLUSoftmax Normalizer = "relu_softmax"
	// NormGumbelSoftmax samples relaxed one-hot weights (Gumbel-softmax).
	NormGumbelSoftmax Normalizer = "gumbel_softmax"
)

// Anneal names a schedule that moves a value from its start to its end.
type Anneal string

// Schedules.
const (
	// AnnealNone keeps the value constant.
	AnnealNone Anneal = "none"
	// AnnealLinear moves the value linearly.
	AnnealLinear Anneal = "linear"
	// AnnealCosine follows a half cosine to zero (as torch's
	// CosineAnnealingLR with eta_min 0).
	AnnealCosine Anneal = "cosine"
)

// OptimState says what happens to the task optimisers' state between tasks.
type OptimState string

// Optimiser state policies.
const (
	// OptimReset starts every task with fresh Adam moments.
	OptimReset OptimState = "reset"
	// OptimKeep carries the Adam moments from one task to the next, as the
	// reference implementation does.
	OptimKeep OptimState = "keep"
)

// Learner names the meta-learning algorithm.
type Learner string

// Meta-learners.
const (
	// LearnerReptile moves the meta-parameters towards the task-adapted ones:
	// meta += lr * mean(task - meta).
	LearnerReptile Learner = "reptile"
	// LearnerFOMAML applies the mean query-set gradient of the adapted
	// parameters (first-order MAML).
	LearnerFOMAML Learner = "fomaml"
)

// BNMode names the batch-norm mode used when scoring query sets.
type BNMode string

// Batch-norm modes.
const (
	// BNTrain normalises query batches with their own statistics
	// (transductive, as in the reference and the REPTILE paper).
	BNTrain BNMode = "train"
	// BNEval normalises with running statistics.
	BNEval BNMode = "eval"
)

// Precision names the float type of a network's forward passes.
type Precision string

// Precisions.
const (
	// PrecisionFloat32 computes in float32 (on CUDA convolutions in TF32, as PyTorch's
	// defaults and the reference do).
	PrecisionFloat32 Precision = "float32"
	// PrecisionBF16 autocasts forward passes to bfloat16 (LibTorch's autocast):
	// convolutions and matrix products compute in bfloat16 and activations are stored in
	// it, while weights, their gradients, optimizer states, batch-norm statistics, the
	// softmax of the alphas and the loss stay float32. Half the memory traffic of the
	// activations, for 8 bits of mantissa instead of 24 (10 with TF32).
	PrecisionBF16 Precision = "bf16"
)

// AllSteps, as TaskConfig.ArchSteps or TaskConfig.TestArchSteps, adapts the
// architecture in every task step.
const AllSteps = -1

// Config is a complete, resolved run configuration.
type Config struct {
	// Data is the data set and the shape of each few-shot task.
	Data DataConfig `yaml:"data"`
	// Model is the meta-model architecture and search space.
	Model ModelConfig `yaml:"model"`
	// Arch is the architecture-parameter (alpha) normaliser.
	Arch ArchConfig `yaml:"arch"`
	// Task is the inner loop: adaptation to a single task.
	Task TaskConfig `yaml:"task"`
	// Meta is the outer loop: meta-training and meta-testing.
	Meta MetaConfig `yaml:"meta"`
	// Run is seeding, device, output and checkpointing.
	Run RunConfig `yaml:"run"`

	// file is the YAML file the config was loaded from ("" for defaults).
	file string
	// origins maps dotted field names to where their value was set. It is
	// replaced, never modified in place, so copies of a Config stay apart.
	origins map[string]origin
}

// DataConfig selects the data set and the shape of each few-shot task.
type DataConfig struct {
	// Dataset is omniglot, miniimagenet or synthetic.
	Dataset Dataset `yaml:"dataset"`
	// Dir is the data set directory; empty means the data package's default
	// location for Dataset.
	Dir string `yaml:"dir"`
	// Ways is the number of classes per task (k in the reference).
	Ways int `yaml:"ways"`
	// Shots is the number of support examples per class in meta-test tasks
	// (n in the reference: 1 or 5).
	Shots int `yaml:"shots"`
	// TrainShots is the number of support examples per class in meta-train
	// tasks (n_train in the reference: 15, whatever Shots is).
	TrainShots int `yaml:"train_shots"`
	// Queries is the number of query examples per class (q: 1).
	Queries int `yaml:"queries"`
	// Vinyals selects the Vinyals et al. class split of Omniglot instead of
	// background (meta-train) / evaluation (meta-test). Omniglot only.
	Vinyals bool `yaml:"vinyals"`
	// Rotations adds the 90, 180 and 270 degree rotations of every Omniglot
	// class as new classes (the reference's class augmentation). Ignored for
	// other data sets.
	Rotations bool `yaml:"rotations"`
	// ImageSize is the side of the square model input in pixels; 0 means the
	// data set's standard size (28 for Omniglot, 84 for MiniImagenet).
	// Ignored for synthetic data, whose size is Synthetic.Size.
	ImageSize int `yaml:"image_size"`
	// Resize is the interpolation used to scale images: bilinear or area.
	Resize Resize `yaml:"resize"`
	// Prefetch prepares the next meta-batch of tasks in the background while
	// the current one trains.
	Prefetch bool `yaml:"prefetch"`
	// Synthetic is the shape of generated data when Dataset is synthetic.
	Synthetic SyntheticConfig `yaml:"synthetic"`
}

// SyntheticConfig is the shape of a generated data set.
type SyntheticConfig struct {
	// Channels is the number of image channels.
	Channels int `yaml:"channels"`
	// Size is the image side in pixels.
	Size int `yaml:"size"`
	// Classes is the number of distinct classes to generate.
	Classes int `yaml:"classes"`
	// PerClass is the number of examples generated per class.
	PerClass int `yaml:"per_class"`
}

// ModelConfig describes the meta-model.
type ModelConfig struct {
	// Kind is search (one-shot MetaNAS network), discrete (fixed genotype)
	// or cnn (4-block REPTILE baseline).
	Kind ModelKind `yaml:"kind"`
	// Primitives is the candidate operation set: few_shot or darts.
	Primitives PrimitiveSet `yaml:"primitives"`
	// Channels is the number of channels of the first cell (C, 28).
	Channels int `yaml:"channels"`
	// Layers is the number of cells (4).
	Layers int `yaml:"layers"`
	// Nodes is the number of intermediate nodes per cell (3).
	Nodes int `yaml:"nodes"`
	// Reductions lists the 0-based indices of the reduction cells ([1, 3]).
	Reductions []int `yaml:"reductions,flow"`
	// FeatureScaleRate multiplies the channel count at each reduction cell
	// (1: channels stay constant).
	FeatureScaleRate int `yaml:"feature_scale_rate"`
	// StemMultiplier sets the stem's output channels to StemMultiplier*Channels.
	StemMultiplier int `yaml:"stem_multiplier"`
	// UsePairwise adds pairwise input weights per node (MetaNAS's
	// use_pairwise_input_alphas).
	UsePairwise bool `yaml:"use_pairwise"`
	// Genotype is the fixed architecture of a discrete model: a published
	// name (metanas_og_v2, metanas_in_v2, auto_meta) or a string in the
	// reference's Genotype(...) format. Ignored unless Kind is discrete.
	Genotype string `yaml:"genotype"`
	// Affine gives the batch norms inside cells learnable scale and shift
	// (false in the reference's search cells).
	Affine bool `yaml:"affine"`
	// DropPath is the drop-path probability of non-identity edge operations
	// during meta-training (0.2).
	DropPath float64 `yaml:"drop_path"`
	// DropPathTest keeps drop-path active during meta-testing too.
	DropPathTest bool `yaml:"drop_path_test"`
	// PruneThreshold skips, in the forward pass, operations and input pairs
	// whose normalised weight is at most this value (0.01).
	PruneThreshold float64 `yaml:"prune_threshold"`
	// CNNChannels is the number of filters per block of the cnn model (64).
	CNNChannels int `yaml:"cnn_channels"`
	// CNNBlocks is the number of conv-BN-ReLU-maxpool blocks of the cnn
	// model (4).
	CNNBlocks int `yaml:"cnn_blocks"`
}

// ArchConfig describes how alphas become operation weights.
type ArchConfig struct {
	// Normalizer is softmax, relu_softmax or gumbel_softmax.
	Normalizer Normalizer `yaml:"normalizer"`
	// TMax is the temperature at the first architecture step of a task (1.0).
	TMax float64 `yaml:"t_max"`
	// TMin is the temperature at the last architecture step of a task
	// (0.05 for Omniglot, 0.1 for MiniImagenet).
	TMin float64 `yaml:"t_min"`
	// TAnneal is the temperature schedule within a task: linear or none
	// (none keeps TMax).
	TAnneal Anneal `yaml:"t_anneal"`
	// AlphaInitStd is the standard deviation of the normal initialisation of
	// the alphas (1e-3).
	AlphaInitStd float64 `yaml:"alpha_init_std"`
}

// TaskConfig describes the adaptation to one task (the inner loop).
type TaskConfig struct {
	// Steps is the number of task steps (passes over the support set) per
	// meta-train task (5).
	Steps int `yaml:"steps"`
	// TestSteps is the number of task steps per meta-test task (100).
	TestSteps int `yaml:"test_steps"`
	// ArchSteps is how many of the first Steps adapt the alphas during
	// meta-training after warm-up; -1 (AllSteps) means all of them.
	ArchSteps int `yaml:"arch_steps"`
	// TestArchSteps is how many of the first TestSteps adapt the alphas
	// during meta-testing (50); -1 (AllSteps) means all of them.
	TestArchSteps int `yaml:"test_arch_steps"`
	// BatchSize is the minibatch size over the support set in meta-training
	// (20).
	BatchSize int `yaml:"batch_size"`
	// TestBatchSize is the minibatch size over the support set in
	// meta-testing (10 for Omniglot; 5 for 1-shot and 15 for 5-shot
	// MiniImagenet).
	TestBatchSize int `yaml:"test_batch_size"`
	// WLR is the Adam learning rate of the weights (0.005).
	WLR float64 `yaml:"w_lr"`
	// ALR is the Adam learning rate of the alphas (0.005); 0 freezes them.
	ALR float64 `yaml:"a_lr"`
	// WBetas are the Adam betas of the weights ([0.0, 0.999]).
	WBetas [2]float64 `yaml:"w_betas,flow"`
	// ABetas are the Adam betas of the alphas ([0.0, 0.999]).
	ABetas [2]float64 `yaml:"a_betas,flow"`
	// WWeightDecay is the L2 weight decay of the weights (0).
	WWeightDecay float64 `yaml:"w_weight_decay"`
	// AWeightDecay is the L2 weight decay of the alphas (0.001).
	AWeightDecay float64 `yaml:"a_weight_decay"`
	// GradClip is the maximum global norm of the weight gradients (5.0);
	// 0 disables clipping.
	GradClip float64 `yaml:"grad_clip"`
	// OptimState is reset (fresh Adam state per task) or keep (carry it
	// over, as the reference does).
	OptimState OptimState `yaml:"optim_state"`
}

// MetaConfig describes meta-training and meta-testing (the outer loop).
type MetaConfig struct {
	// Learner is reptile or fomaml.
	Learner Learner `yaml:"learner"`
	// Epochs is the number of meta-epochs (meta-batches) to train (30000).
	Epochs int `yaml:"epochs"`
	// WarmUpEpochs is the number of leading meta-epochs without alpha
	// adaptation: epoch e (counted from 1) is warm-up while e < WarmUpEpochs
	// (15000).
	WarmUpEpochs int `yaml:"warm_up_epochs"`
	// MetaBatch is the number of tasks per meta-epoch (10).
	MetaBatch int `yaml:"meta_batch"`
	// WLR is the meta learning rate of the weights (1.0).
	WLR float64 `yaml:"w_lr"`
	// ALR is the meta learning rate of the alphas (0.6).
	ALR float64 `yaml:"a_lr"`
	// Anneal is the meta learning-rate schedule, none, linear or cosine: to
	// zero over Epochs for the weights and over the epochs after warm-up
	// for the alphas.
	Anneal Anneal `yaml:"anneal"`
	// TestEvery runs a meta-test every this many meta-epochs (2500); 0 only
	// tests at the end.
	TestEvery int `yaml:"test_every"`
	// TestTasks is the number of tasks in each intermediate meta-test (25,
	// the reference's test meta-batch).
	TestTasks int `yaml:"test_tasks"`
	// FinalTestTasks is the number of tasks in the final meta-test (5000: the
	// reference's 200 evaluation batches of 25 tasks); 0 skips it.
	FinalTestTasks int `yaml:"final_test_tasks"`
	// PruneThreshold prunes, at every meta-test, meta-model operations whose
	// normalised weight is at most this value so they are no longer trained
	// (0.01).
	PruneThreshold float64 `yaml:"prune_threshold"`
	// TestPruneThreshold is the forward-pass prune threshold used during
	// meta-testing (0.05); it replaces Model.PruneThreshold there.
	TestPruneThreshold float64 `yaml:"test_prune_threshold"`
	// EvalBN is the batch-norm mode when scoring query sets: train
	// (transductive, the reference) or eval.
	EvalBN BNMode `yaml:"eval_bn"`
}

// RunConfig is seeding, device, output and checkpointing.
type RunConfig struct {
	// Name labels the run in logs and file names.
	Name string `yaml:"name"`
	// Seed seeds every random number generator of the run.
	Seed int64 `yaml:"seed"`
	// Device is cpu, cuda or cuda:N.
	Device string `yaml:"device"`
	// Out is the run directory for logs, checkpoints and results.
	Out string `yaml:"out"`
	// Threads is the number of CPU threads for tensor operations; 0 lets the
	// runtime decide.
	Threads int `yaml:"threads"`
	// Workers is how many tasks of a meta-batch (and of a meta-test) are adapted
	// concurrently, each on its own copy of the network; 0 picks one per two CPU
	// cores on CPU and one on a GPU. Results do not depend on it.
	Workers int `yaml:"workers"`
	// Streams runs each worker on its own CUDA stream (CUDA only), so that the small
	// kernels of concurrent tasks overlap on the GPU; results do not depend on it.
	Streams bool `yaml:"streams"`
	// BatchTasks > 1 adapts that many tasks of a meta-batch together as one batched
	// network (grouped convolutions over the tasks) instead of one network per task, so
	// that each step's per-op cost serves them all; it must divide meta.meta_batch and
	// costs that many times a task's activation memory. 0 or 1 adapts task by task (on
	// CUDA, 0 also logs a hint that batches are much faster there; 1 does not).
	// The search network with REPTILE and a reset task optimizer only. Meta-tests adapt
	// their tasks in batches too (a remainder task by task).
	BatchTasks int `yaml:"batch_tasks"`
	// BatchWorkers is how many batches of run.batch_tasks tasks are adapted at once, each
	// on a batched network of its own (on CUDA each on its own stream, so that the
	// batches' kernels overlap on the GPU; on the CPU the threads are split between
	// them); 0 or 1 adapts one batch at a time. It costs one more network, optimizer
	// state and step's activations per worker. Results do not depend on it.
	BatchWorkers int `yaml:"batch_workers"`
	// CUDAGraphs runs the batched network's steps (run.batch_tasks) from captured CUDA
	// graphs: after two eager steps, one step is captured and replayed for every later
	// minibatch and task (one graph for steps with fixed alphas, one for steps that adapt
	// them), instead of issuing its thousands of ops one by one. CUDA only. Search steps
	// then prune on the device: an op pruned in every task still runs (zero gradients, its
	// batch norm statistics move, its drop-path masks are drawn). A failed capture is
	// logged and the run goes on eagerly.
	CUDAGraphs bool `yaml:"cuda_graphs"`
	// Precision is float32 (the default) or bf16: forward passes autocast to bfloat16
	// (see PrecisionBF16), for GPUs with bfloat16 arithmetic. An experiment: results
	// differ from float32 within bfloat16's precision, and on the CPU it is slower (the
	// shim's own float32 kernels stand aside).
	Precision Precision `yaml:"precision"`
	// CheckpointEvery saves a checkpoint every this many meta-epochs; 0 saves
	// at every meta-test and at the end.
	CheckpointEvery int `yaml:"checkpoint_every"`
	// LogEvery logs training progress every this many meta-epochs (50).
	LogEvery int `yaml:"log_every"`
	// Resume is a checkpoint to continue from; empty starts afresh.
	Resume string `yaml:"resume"`
}

// Default returns the reference og_metanas configuration (MetaNAS, Omniglot
// 20-way, meta-tested 1-shot), with the reference's quirks replaced by sound
// choices (fresh task-optimiser state per task).
func Default() Config {
	return Config{
		Data: DataConfig{
			Dataset:    Omniglot,
			Ways:       20,
			Shots:      1,
			TrainShots: 15,
			Queries:    1,
			Rotations:  true,
			Resize:     ResizeBilinear,
			Prefetch:   true,
			Synthetic: SyntheticConfig{
				Channels: 1,
				Size:     28,
				Classes:  100,
				PerClass: 20,
			},
		},
		Model: ModelConfig{
			Kind:             ModelSearch,
			Primitives:       PrimitivesFewShot,
			Channels:         28,
			Layers:           4,
			Nodes:            3,
			Reductions:       []int{1, 3},
			FeatureScaleRate: 1,
			StemMultiplier:   3,
			UsePairwise:      true,
			DropPath:         0.2,
			PruneThreshold:   0.01,
			CNNChannels:      64,
			CNNBlocks:        4,
		},
		Arch: ArchConfig{
			Normalizer:   NormSoftmax,
			TMax:         1.0,
			TMin:         0.05,
			TAnneal:      AnnealLinear,
			AlphaInitStd: 1e-3,
		},
		Task: TaskConfig{
			Steps:         5,
			TestSteps:     100,
			ArchSteps:     AllSteps,
			TestArchSteps: 50,
			BatchSize:     20,
			TestBatchSize: 10,
			WLR:           0.005,
			ALR:           0.005,
			WBetas:        [2]float64{0.0, 0.999},
			ABetas:        [2]float64{0.0, 0.999},
			WWeightDecay:  0,
			AWeightDecay:  0.001,
			GradClip:      5.0,
			OptimState:    OptimReset,
		},
		Meta: MetaConfig{
			Learner:            LearnerReptile,
			Epochs:             30000,
			WarmUpEpochs:       15000,
			MetaBatch:          10,
			WLR:                1.0,
			ALR:                0.6,
			Anneal:             AnnealNone,
			TestEvery:          2500,
			TestTasks:          25,
			FinalTestTasks:     5000,
			PruneThreshold:     0.01,
			TestPruneThreshold: 0.05,
			EvalBN:             BNTrain,
		},
		Run: RunConfig{
			Name:      "metanas",
			Seed:      2,
			Device:    "cpu",
			Out:       "runs/metanas",
			LogEvery:  50,
			Precision: PrecisionFloat32,
		},
	}
}

// InputShape returns the channels and side length of the model input.
func (d DataConfig) InputShape() (channels, size int) {
	switch d.Dataset {
	case Synthetic:
		return d.Synthetic.Channels, d.Synthetic.Size
	case MiniImagenet:
		channels, size = 3, 84
	default:
		channels, size = 1, 28
	}
	if d.ImageSize > 0 {
		size = d.ImageSize
	}
	return channels, size
}

// MetaTrainArchSteps returns how many task steps adapt the alphas in a
// meta-train task after warm-up, resolving AllSteps.
func (t TaskConfig) MetaTrainArchSteps() int {
	return resolveSteps(t.ArchSteps, t.Steps)
}

// MetaTestArchSteps returns how many task steps adapt the alphas in a
// meta-test task, resolving AllSteps.
func (t TaskConfig) MetaTestArchSteps() int {
	return resolveSteps(t.TestArchSteps, t.TestSteps)
}

func resolveSteps(n, all int) int {
	if n < 0 || n > all {
		return all
	}
	return n
}

// InWarmUp reports whether meta-epoch epoch (counted from 1) is a warm-up
// epoch, in which alphas are not adapted: epoch < WarmUpEpochs, as in the
// reference.
func (m MetaConfig) InWarmUp(epoch int) bool {
	return epoch < m.WarmUpEpochs
}

// File returns the YAML file the configuration was loaded from, or "" when
// it was built from Default.
func (c *Config) File() string {
	return c.file
}
