package data

import (
	"bytes"
	"strings"
	"testing"
)

func TestResizeHandComputed(t *testing.T) {
	tests := []struct {
		name       string
		src        []uint8
		c, h, w    int
		outH, outW int
		mode       ResizeMode
		want       []uint8
	}{
		{
			name: "area 4x4 to 2x2 block means",
			src: []uint8{
				0, 4, 10, 20,
				8, 12, 30, 40,
				100, 100, 1, 3,
				100, 104, 5, 7,
			},
			c: 1, h: 4, w: 4, outH: 2, outW: 2, mode: ResizeArea,
			// (0+4+8+12)/4, (10+20+30+40)/4, (100+100+100+104)/4, (1+3+5+7)/4
			want: []uint8{6, 25, 101, 4},
		},
		{
			name: "area 3x3 to 2x2 fractional weights 2/3 and 1/3",
			src: []uint8{
				0, 90, 180,
				90, 180, 90,
				180, 90, 0,
			},
			c: 1, h: 3, w: 3, outH: 2, outW: 2, mode: ResizeArea,
			// rows: [30 150] [120 120] [150 30]; then 2/3,1/3 vertically.
			want: []uint8{60, 140, 140, 60},
		},
		{
			name: "area default mode is area",
			src:  []uint8{0, 4, 10, 20, 8, 12, 30, 40, 100, 100, 1, 3, 100, 104, 5, 7},
			c:    1, h: 4, w: 4, outH: 2, outW: 2, mode: "",
			want: []uint8{6, 25, 101, 4},
		},
		{
			name: "area rounds half up",
			src:  []uint8{0, 1, 2, 5},
			c:    1, h: 1, w: 4, outH: 1, outW: 2, mode: ResizeArea,
			want: []uint8{1, 4}, // 0.5 -> 1, 3.5 -> 4
		},
		{
			name: "area 1D 5 to 2 (weights 0.4 0.4 0.2 / 0.2 0.4 0.4)",
			src:  []uint8{10, 20, 30, 40, 50},
			c:    1, h: 1, w: 5, outH: 1, outW: 2, mode: ResizeArea,
			// [0, 2.5): 10*.4 + 20*.4 + 30*.2 = 18; [2.5, 5): 30*.2 + 40*.4 + 50*.4 = 42.
			want: []uint8{18, 42},
		},
		{
			name: "area channels are independent",
			src: []uint8{
				0, 4, 8, 12, // channel 0, 2x2
				200, 200, 0, 0, // channel 1, 2x2
			},
			c: 2, h: 2, w: 2, outH: 1, outW: 1, mode: ResizeArea,
			want: []uint8{6, 100},
		},
		{
			// Pillow BILINEAR, 4 -> 2: support 2, weights 3/7 3/7 1/7 and
			// 1/7 3/7 3/7; (0*3+70*3+140)/7 = 50, (70+140*3+210*3)/7 = 160.
			name: "bilinear (Pillow) 1x4 to 1x2",
			src:  []uint8{0, 70, 140, 210},
			c:    1, h: 1, w: 4, outH: 1, outW: 2, mode: ResizeBilinear,
			want: []uint8{50, 160},
		},
		{
			// The same weights vertically.
			name: "bilinear (Pillow) 4x1 to 2x1",
			src:  []uint8{0, 70, 140, 210},
			c:    1, h: 4, w: 1, outH: 2, outW: 1, mode: ResizeBilinear,
			want: []uint8{50, 160},
		},
		{
			// Upscaling 2 -> 4: triangle of support 1, centres at 0.25,
			// 0.75, 1.25, 1.75: weights (1), (.75,.25), (.25,.75), (1).
			name: "bilinear (Pillow) upscale 1x2 to 1x4",
			src:  []uint8{0, 100},
			c:    1, h: 1, w: 2, outH: 1, outW: 4, mode: ResizeBilinear,
			want: []uint8{0, 25, 75, 100},
		},
		{
			name: "same size copies",
			src:  []uint8{1, 2, 3, 4},
			c:    1, h: 2, w: 2, outH: 2, outW: 2, mode: ResizeBilinear,
			want: []uint8{1, 2, 3, 4},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Resize(tc.src, tc.c, tc.h, tc.w, tc.outH, tc.outW, tc.mode)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestResizeConstantStaysConstant(t *testing.T) {
	tests := []struct {
		h, w, outH, outW int
	}{
		{105, 105, 28, 28},
		{84, 84, 28, 28},
		{7, 13, 3, 5},
		{28, 28, 105, 105},
		{3, 3, 2, 2},
	}
	for _, mode := range []ResizeMode{ResizeArea, ResizeBilinear} {
		for _, tc := range tests {
			for _, v := range []uint8{0, 1, 77, 128, 254, 255} {
				src := bytes.Repeat([]uint8{v}, 2*tc.h*tc.w)
				got, err := Resize(src, 2, tc.h, tc.w, tc.outH, tc.outW, mode)
				if err != nil {
					t.Fatal(err)
				}
				for i, g := range got {
					if g != v {
						t.Fatalf("%s %dx%d->%dx%d value %d: got %d at %d", mode, tc.h, tc.w, tc.outH, tc.outW, v, g, i)
					}
				}
			}
		}
	}
}

// TestAreaWeights checks that the area weights of 105 -> 28 cover each
// source pixel exactly once in total and sum to one per output.
func TestAreaWeights(t *testing.T) {
	tp := areaTaps(105, 28)
	cover := make([]float64, 105)
	for i := range tp.w {
		sum := 0.0
		for k, w := range tp.w[i] {
			sum += w
			cover[tp.start[i]+k] += w * 105 / 28
		}
		if sum < 1-1e-12 || sum > 1+1e-12 {
			t.Fatalf("output %d: weights sum to %v", i, sum)
		}
	}
	for j, c := range cover {
		if c < 1-1e-12 || c > 1+1e-12 {
			t.Fatalf("source pixel %d covered %v times", j, c)
		}
	}
}

func TestResizeErrors(t *testing.T) {
	tests := []struct {
		name    string
		src     []uint8
		c, h, w int
		oh, ow  int
		mode    ResizeMode
		want    string
	}{
		{"bad mode", make([]uint8, 4), 1, 2, 2, 1, 1, "bicubic", "unknown resize mode"},
		{"short input", make([]uint8, 3), 1, 2, 2, 1, 1, ResizeArea, "want c*h*w"},
		{"zero size", make([]uint8, 4), 1, 2, 2, 0, 1, ResizeArea, "invalid sizes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Resize(tc.src, tc.c, tc.h, tc.w, tc.oh, tc.ow, tc.mode)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestRotate(t *testing.T) {
	src := []uint8{
		1, 2, 3,
		4, 5, 6,
		7, 8, 9,
	}
	tests := []struct {
		turns int
		want  []uint8
	}{
		{0, src},
		// Counter-clockwise by 90: the right column becomes the top row.
		{1, []uint8{3, 6, 9, 2, 5, 8, 1, 4, 7}},
		{2, []uint8{9, 8, 7, 6, 5, 4, 3, 2, 1}},
		{3, []uint8{7, 4, 1, 8, 5, 2, 9, 6, 3}},
		{4, src},
		{-1, []uint8{7, 4, 1, 8, 5, 2, 9, 6, 3}},
	}
	for _, tc := range tests {
		got, err := Rotate(src, 1, 3, tc.turns)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, tc.want) {
			t.Errorf("turns %d: got %v, want %v", tc.turns, got, tc.want)
		}
	}
	// Two channels rotate independently; a 2x2 case.
	got, err := Rotate([]uint8{1, 2, 3, 4, 10, 20, 30, 40}, 2, 2, 1)
	if err != nil {
		t.Fatal(err)
	}
	if want := []uint8{2, 4, 1, 3, 20, 40, 10, 30}; !bytes.Equal(got, want) {
		t.Errorf("2 channels: got %v, want %v", got, want)
	}
	if _, err := Rotate(src, 1, 2, 1); err == nil {
		t.Error("no error for a wrong size")
	}
}
