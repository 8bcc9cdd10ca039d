package data

import (
	"bytes"
	"testing"
)

func TestCacheRoundTripAndCorruption(t *testing.T) {
	classes := []Class{
		{Name: "a", N: 2, Pixels: []uint8{1, 2, 3, 4, 5, 6, 7, 8}},
		{Name: "bé/c", N: 1, Pixels: []uint8{9, 10, 11, 12}},
		{Name: "", N: 0, Pixels: []uint8{}},
	}
	var b bytes.Buffer
	if err := encodeCache(&b, "key|1", 1, 2, 2, classes); err != nil {
		t.Fatal(err)
	}
	raw := b.Bytes()
	got, err := decodeCache(raw, "key|1", 1, 2, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(classes) {
		t.Fatalf("%d classes", len(got))
	}
	for i := range got {
		if got[i].Name != classes[i].Name || got[i].N != classes[i].N || !bytes.Equal(got[i].Pixels, classes[i].Pixels) {
			t.Fatalf("class %d: %+v, want %+v", i, got[i], classes[i])
		}
	}
	tests := []struct {
		name    string
		data    []byte
		key     string
		c, h, w int
	}{
		{"other key", raw, "key|2", 1, 2, 2},
		{"other shape", raw, "key|1", 1, 1, 4},
		{"empty", nil, "key|1", 1, 2, 2},
	}
	for n := 0; n < len(raw); n++ {
		tests = append(tests, struct {
			name    string
			data    []byte
			key     string
			c, h, w int
		}{"truncated", raw[:n], "key|1", 1, 2, 2})
	}
	for i := range raw {
		flipped := append([]byte(nil), raw...)
		flipped[i] ^= 0x10
		tests = append(tests, struct {
			name    string
			data    []byte
			key     string
			c, h, w int
		}{"flipped byte", flipped, "key|1", 1, 2, 2})
	}
	for _, tc := range tests {
		if _, err := decodeCache(tc.data, tc.key, tc.c, tc.h, tc.w); err == nil {
			t.Fatalf("%s (%d bytes): no error", tc.name, len(tc.data))
		}
	}
}
