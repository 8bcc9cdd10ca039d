package data

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// cacheMagic starts every cache file; bump the version when the format or
// the meaning of the decoded pixels changes.
const cacheMagic = "MNGDATA1"

// cacheFormatVersion is part of every cache key, so a change of the
// decoding or resampling code can invalidate old entries.
const cacheFormatVersion = "v1"

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// DefaultCacheDir returns the cache directory used when an options struct
// leaves CacheDir empty: os.UserCacheDir()/metanas-go.
func DefaultCacheDir() (string, error) {
	d, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(d, "metanas-go"), nil
}

// cacheStore reads and writes decoded class lists in one directory. A
// zero dir disables the cache.
type cacheStore struct {
	dir string
}

func newCacheStore(dir string, disabled bool) cacheStore {
	if disabled {
		return cacheStore{}
	}
	if dir == "" {
		d, err := DefaultCacheDir()
		if err != nil {
			return cacheStore{}
		}
		dir = d
	}
	return cacheStore{dir: dir}
}

// path returns the file for key; prefix makes the name readable.
func (cs cacheStore) path(prefix, key string) string {
	sum := sha256.Sum256([]byte(key))
	return filepath.Join(cs.dir, prefix+"-"+hex.EncodeToString(sum[:8])+".bin")
}

// load returns the classes stored under key, or ok=false when there is no
// valid entry (missing, corrupt, other key or shape).
func (cs cacheStore) load(prefix, key string, c, h, w int) (classes []Class, ok bool) {
	if cs.dir == "" {
		return nil, false
	}
	b, err := os.ReadFile(cs.path(prefix, key))
	if err != nil {
		return nil, false
	}
	classes, err = decodeCache(b, key, c, h, w)
	if err != nil {
		return nil, false
	}
	return classes, true
}

// store writes classes under key atomically (temporary file and rename).
func (cs cacheStore) store(prefix, key string, c, h, w int, classes []Class) error {
	if cs.dir == "" {
		return nil
	}
	if err := os.MkdirAll(cs.dir, 0o755); err != nil {
		return fmt.Errorf("data: cache: %w", err)
	}
	final := cs.path(prefix, key)
	f, err := os.CreateTemp(cs.dir, filepath.Base(final)+".tmp*")
	if err != nil {
		return fmt.Errorf("data: cache: %w", err)
	}
	tmp := f.Name()
	werr := encodeCache(f, key, c, h, w, classes)
	cerr := f.Close()
	if werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp, final)
	}
	if werr != nil {
		os.Remove(tmp)
		return fmt.Errorf("data: cache: write %s: %w", final, werr)
	}
	return nil
}

// Cache file layout (all integers unsigned varints unless noted):
//
//	magic "MNGDATA1"
//	len(key) key
//	C H W
//	number of classes
//	per class: len(name) name N
//	the pixels of all classes, concatenated
//	CRC-32C (Castagnoli) of everything above, 4 bytes little endian
func encodeCache(w io.Writer, key string, c, h, wd int, classes []Class) error {
	crc := crc32.New(crcTable)
	bw := bufio.NewWriterSize(io.MultiWriter(w, crc), 1<<20)
	var tmp [binary.MaxVarintLen64]byte
	putU := func(v uint64) {
		n := binary.PutUvarint(tmp[:], v)
		bw.Write(tmp[:n])
	}
	bw.WriteString(cacheMagic)
	putU(uint64(len(key)))
	bw.WriteString(key)
	putU(uint64(c))
	putU(uint64(h))
	putU(uint64(wd))
	putU(uint64(len(classes)))
	for _, cl := range classes {
		putU(uint64(len(cl.Name)))
		bw.WriteString(cl.Name)
		putU(uint64(cl.N))
	}
	for _, cl := range classes {
		bw.Write(cl.Pixels)
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	var sum [4]byte
	binary.LittleEndian.PutUint32(sum[:], crc.Sum32())
	_, err := w.Write(sum[:])
	return err
}

var errCacheFormat = errors.New("data: cache: bad file")

// decodeCache parses a cache file. The returned pixel slices share b.
func decodeCache(b []byte, key string, c, h, w int) ([]Class, error) {
	if len(b) < len(cacheMagic)+4 || string(b[:len(cacheMagic)]) != cacheMagic {
		return nil, errCacheFormat
	}
	body := b[:len(b)-4]
	if crc32.Checksum(body, crcTable) != binary.LittleEndian.Uint32(b[len(b)-4:]) {
		return nil, errCacheFormat
	}
	p := body[len(cacheMagic):]
	getU := func() (uint64, bool) {
		v, n := binary.Uvarint(p)
		if n <= 0 {
			return 0, false
		}
		p = p[n:]
		return v, true
	}
	getS := func() (string, bool) {
		n, ok := getU()
		if !ok || n > uint64(len(p)) {
			return "", false
		}
		s := string(p[:n])
		p = p[n:]
		return s, true
	}
	k, ok := getS()
	if !ok || k != key {
		return nil, errCacheFormat
	}
	var dims [4]uint64
	for i := range dims {
		if dims[i], ok = getU(); !ok {
			return nil, errCacheFormat
		}
	}
	if dims[0] != uint64(c) || dims[1] != uint64(h) || dims[2] != uint64(w) || dims[3] > uint64(len(p)) {
		return nil, errCacheFormat
	}
	classes := make([]Class, dims[3])
	total := uint64(0)
	sz := uint64(c * h * w)
	for i := range classes {
		name, ok1 := getS()
		n, ok2 := getU()
		if !ok1 || !ok2 || n > uint64(len(p)) {
			return nil, errCacheFormat
		}
		classes[i] = Class{Name: name, N: int(n)}
		total += n * sz
	}
	if total != uint64(len(p)) {
		return nil, errCacheFormat
	}
	off := uint64(0)
	for i := range classes {
		n := uint64(classes[i].N) * sz
		classes[i].Pixels = p[off : off+n : off+n]
		off += n
	}
	return classes, nil
}

// cacheKey joins key parts with "|" after checking that none contains it.
func cacheKey(parts ...string) string {
	for i, s := range parts {
		parts[i] = strings.ReplaceAll(s, "|", "%7C")
	}
	return strings.Join(parts, "|")
}
