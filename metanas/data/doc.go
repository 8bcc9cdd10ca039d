// Package data provides the few-shot datasets and task sampling of
// metanas-go in pure Go (standard library only, no cgo or torch): it
// produces plain Go slices that the training code converts to tensors.
//
// # Datasets
//
// A Dataset is a list of classes of same-shape images, stored in memory
// as uint8 intensities (0..255), channel-major (CHW) per image. A Split
// holds the meta-train, meta-validation and meta-test datasets.
//
//	LoadOmniglot(dir string, opt OmniglotOptions) (*Split, error)
//	LoadMiniImagenet(dir string, opt MiniImagenetOptions) (*Split, error)
//	Synthetic(opt SyntheticOptions) (*Dataset, error)
//	SyntheticSplit(opt SyntheticOptions, valClasses, testClasses int) (*Split, error)
//
// # Omniglot protocol
//
// LoadOmniglot reads images_background.zip and images_evaluation.zip
// directly (archive/zip), or the extracted folders images_background/ and
// images_evaluation/ in the same directory. Inside, images are
// <set>/<Alphabet>/<characterNN>/<id>_<drawer>.png. Characters are sorted
// by alphabet and character name; a character's images by file name.
//
// Each image is decoded to 8-bit gray keeping its polarity (white
// background = 255 = 1.0, black strokes = 0.0, as torchvision's ToTensor
// gives for the "L" image) unless OmniglotOptions.Invert is set, then
// (with rotations on) rotated counter-clockwise by 0, 90, 180 and 270
// degrees, each rotation being a class of its own, and resized from
// 105x105 to Size x Size (28). Rotation comes before resizing, as in the
// reference, where torchmeta's class augmentation runs before Resize
// (with ResizeArea the order makes no difference, so the loader rotates
// the small image there).
// Classes are in rotation-major order: all characters unrotated, then all
// rotated by 90 degrees, and so on (torchmeta's order). The background set
// gives 964*4 meta-train classes and the evaluation set 659*4 meta-test
// classes, 20 images each.
//
// Two resize filters exist: ResizeArea (default; exact area average with
// fractional pixel weights) and ResizeBilinear (Pillow's antialiased
// BILINEAR resampling, what torchvision's Resize does to PIL images and
// thus the reference's choice). Values are stored rounded to uint8 and
// become float32 v/255 in tasks, so they lie in [0,1] like ToTensor's.
//
// Note: torchmeta inverts Omniglot (ImageOps.invert) when it builds its
// HDF5 file, so the reference sees white strokes on black; set
// OmniglotOptions.Invert to match it.
//
// A validation split can be moved out of meta-train: ValCharacters or
// ValFraction characters, chosen at random with ValSeed among characters
// (or, with ValByAlphabet, as whole alphabets); all rotations of a
// validation character go to the validation split.
//
// The Vinyals option uses the split of Vinyals et al. instead: the union
// of both sets in canonical order (the 964 background characters sorted,
// then the 659 evaluation characters sorted); the first 1200 (all of the
// background set and the first 236 evaluation characters, up to
// Gurmukhi/character41) are meta-train, the remaining 423 (from
// Gurmukhi/character42 on) meta-test, each times 4 rotations. This is a
// deterministic rendition of "1200 characters for training, the rest for
// testing"; it is not the character list of torchmeta's vinyals_*.json
// files, which this package does not ship.
//
// # MiniImagenet
//
// LoadMiniImagenet reads the Ravi & Larochelle split either from
// train.csv, val.csv, test.csv (header "filename,label") plus an images/
// folder, or from train/, val/, test/ folders holding one sub-folder of
// JPEG/PNG images per class. Images become 3x84x84 RGB (resized with the
// chosen filter when they have another size).
//
// # Cache
//
// Decoding the 32,460 Omniglot PNGs takes seconds, so the loaders decode
// in parallel (runtime.NumCPU goroutines) and write the decoded, resized
// and rotated classes of each set to a cache file in CacheDir (default
// os.UserCacheDir()/metanas-go). The file is named after a hash of its
// key, and the key (also stored in the file and checked) holds the format
// version, the set name, the source fingerprint (size and modification
// time of a zip archive; a hash of the relative paths, sizes and
// modification times of the files of a folder or of the images a CSV
// lists) and the decoding settings (size, filter, inversion, rotations).
// A changed archive or setting therefore misses the cache and decodes
// again. Files carry a CRC-32C and are written atomically (temporary file
// plus rename); an invalid file is ignored and rewritten. The validation
// and Vinyals choices are not part of the key: they only regroup cached
// classes. A failure to write the cache is not fatal; it is reported in
// Split.CacheErr. NoCache turns the cache off.
//
// # Tasks
//
// A Sampler draws N-way K-shot tasks with Q queries per class from one
// Dataset. Task i depends only on the dataset, N, K, Q, the seed and i:
// its random numbers come from a math/rand/v2 PCG source seeded with
// (seed, i), mapped to ranges with the package's own functions so the
// stream is the same on every Go release. Resuming a run therefore needs
// only the task (or meta-batch) counter. Within a task, N classes are
// drawn without replacement, label l goes to the l-th drawn class (a
// random label permutation), K+Q distinct images are drawn per class (the
// first K support, the rest query, so support and query are disjoint), and
// the support and query examples are each shuffled. Task carries float32
// NCHW images in [0,1], int64 labels, and the class and image indices it
// used.
//
// A Prefetcher builds the next meta-batches (Sampler.Batch) in a
// goroutine while the current one trains; since batch b is always
// Sampler.Batch(b, size), results are identical with or without it.
// Prefetcher.Position is the counter to checkpoint.
//
// # Errors
//
// Errors wrap ErrNotFound (missing data; for Omniglot the message names
// both canonical archives and where they go), ErrTooFewClasses (the
// message gives the split's class count and the ways asked for),
// ErrTooFewImages, ErrBadImage (the message names the file, for a zip
// member as archive.zip:path/inside) or ErrClosed.
package data
