package main

import (
	"errors"
	"os"
	"strings"
	"testing"
)

func TestParseProcStat(t *testing.T) {
	// A command name with spaces and parentheses: fields count from the
	// last ')'.
	line := "4242 (ng) inx: (worker)) S 4241 4241 4241 0 -1 4194624 1200 0 0 0 731 265 0 0 20 0 1 0 123456 12345678 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n"
	s, err := parseProcStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if s != (procStat{PPID: 4241, UTime: 731, STime: 265, Start: 123456}) {
		t.Errorf("parseProcStat = %+v, want ppid 4241, utime 731, stime 265, start 123456", s)
	}
	if s.CPUTicks() != 996 {
		t.Errorf("CPUTicks = %d, want 996", s.CPUTicks())
	}
}

func TestParseProcStatRejects(t *testing.T) {
	for name, line := range map[string]string{
		"no command":  "4242 S 1 2 3",
		"short":       "4242 (x) S 1 2 3 4 5 6 7 8 9 10",
		"bad utime":   "1 (x) S 0 1 1 0 -1 0 0 0 0 0 abc 2 0 0 20 0 1 0 99 0 0",
		"bad ppid":    "1 (x) S p 1 1 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 99 0 0",
		"bad start":   "1 (x) S 0 1 1 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 s9 0 0",
		"no start":    "1 (x) S 0 1 1 0 -1 0 0 0 0 0 1 2 0 0 20 0 1",
		"empty input": "",
	} {
		if s, err := parseProcStat([]byte(line)); !errors.Is(err, errProcStat) {
			t.Errorf("%s: parseProcStat = %+v, %v; want errProcStat", name, s, err)
		}
	}
}

func TestReadProcStatSelf(t *testing.T) {
	s, err := readProcStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.PPID != os.Getppid() {
		t.Errorf("ppid = %d, want %d", s.PPID, os.Getppid())
	}
	tree := processTree(os.Getpid())
	if len(tree) == 0 || tree[0] != os.Getpid() {
		t.Errorf("processTree(self) = %v, want our PID first", tree)
	}
	if kb, err := treeRSS(tree[:1]); err != nil || kb <= 0 {
		t.Errorf("treeRSS(self) = %d, %v; want a positive size", kb, err)
	}
}

func TestParseVmRSS(t *testing.T) {
	status := "Name:\tnginx\nState:\tS (sleeping)\nVmPeak:\t   20000 kB\nVmRSS:\t    5124 kB\nRssAnon:\t    1200 kB\n"
	kb, err := parseVmRSS([]byte(status))
	if err != nil || kb != 5124 {
		t.Errorf("parseVmRSS = %d, %v; want 5124", kb, err)
	}
	for name, in := range map[string]string{
		"missing":  "Name:\tkthreadd\nState:\tS (sleeping)\n",
		"no unit":  "VmRSS:\t5124\n",
		"bad size": "VmRSS:\t51x4 kB\n",
	} {
		if kb, err := parseVmRSS([]byte(in)); err == nil {
			t.Errorf("%s: parseVmRSS = %d, nil; want an error", name, kb)
		}
	}
}

func TestCountNewConns(t *testing.T) {
	log := "7 1 200\n7 2 200\n8 1 200\n9 5 200\n8 2 200\n10 1 200\n11 1"
	n, err := countNewConns(strings.NewReader(log))
	if err != nil || n != 3 {
		t.Errorf("countNewConns = %d, %v; want 3 (the partial last line is skipped)", n, err)
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{5}, 5},
		{[]float64{9, 1, 5}, 5},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestThousands(t *testing.T) {
	for in, want := range map[float64]string{0: "0", 999.4: "999", 1000: "1,000", 97818.32: "97,818", 1234567: "1,234,567"} {
		if got := thousands(in); got != want {
			t.Errorf("thousands(%v) = %q, want %q", in, got, want)
		}
	}
}
