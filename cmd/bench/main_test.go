package main

import "testing"

func TestParseGPUApps(t *testing.T) {
	for _, c := range []struct {
		name string
		csv  string
		pid  int
		want float64
	}{
		{"one line", "4242, 1536\n", 4242, 1536},
		{"other processes ignored", "17, 900\n4242, 1536\n99, 12\n", 4242, 1536},
		{"two GPUs summed", "4242, 1000\n4242, 24\n", 4242, 1024},
		{"not listed", "17, 900\n", 4242, -1},
		{"empty", "", 4242, -1},
		{"not a number", "4242, [N/A]\n", 4242, -1},
	} {
		if got := parseGPUApps(c.csv, c.pid); got != c.want {
			t.Errorf("%s: parseGPUApps(%q, %d) = %g, want %g", c.name, c.csv, c.pid, got, c.want)
		}
	}
}
