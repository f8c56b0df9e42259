package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// clockTick is the length of one /proc/PID/stat CPU tick in microseconds.
// The kernel reports utime and stime in USER_HZ, which is 100 on every
// Linux architecture Go supports (sysconf(_SC_CLK_TCK) without cgo is not
// available, and the value is fixed by the ABI).
const clockTick = 10_000

// procStat is what the harness needs from /proc/PID/stat.
type procStat struct {
	PPID  int
	UTime uint64 // ticks in user mode, all threads of the process
	STime uint64 // ticks in kernel mode, all threads of the process
	Start uint64 // start time in ticks after boot: with the PID, names one process
}

// CPUTicks is user plus system time in ticks.
func (s procStat) CPUTicks() uint64 { return s.UTime + s.STime }

// errProcStat reports a /proc/PID/stat line the parser does not understand.
var errProcStat = errors.New("malformed /proc/PID/stat")

// parseProcStat parses the contents of /proc/PID/stat. The second field,
// the command name in parentheses, may itself hold spaces and parentheses,
// so the fields are counted from the last ')'.
func parseProcStat(data []byte) (procStat, error) {
	end := bytes.LastIndexByte(data, ')')
	if end < 0 {
		return procStat{}, fmt.Errorf("%w: no ')' after the command name", errProcStat)
	}
	// After ")": state(3) ppid(4) pgrp session tty_nr tpgid flags minflt
	// cminflt majflt cmajflt utime(14) stime(15) cutime cstime priority
	// nice num_threads itrealvalue starttime(22) ...
	f := strings.Fields(string(data[end+1:]))
	if len(f) < 20 {
		return procStat{}, fmt.Errorf("%w: %d fields after the command name, want at least 20", errProcStat, len(f))
	}
	var s procStat
	var err error
	if s.PPID, err = strconv.Atoi(f[1]); err != nil {
		return procStat{}, fmt.Errorf("%w: ppid: %v", errProcStat, err)
	}
	if s.UTime, err = strconv.ParseUint(f[11], 10, 64); err != nil {
		return procStat{}, fmt.Errorf("%w: utime: %v", errProcStat, err)
	}
	if s.STime, err = strconv.ParseUint(f[12], 10, 64); err != nil {
		return procStat{}, fmt.Errorf("%w: stime: %v", errProcStat, err)
	}
	if s.Start, err = strconv.ParseUint(f[19], 10, 64); err != nil {
		return procStat{}, fmt.Errorf("%w: starttime: %v", errProcStat, err)
	}
	return s, nil
}

// parseVmRSS returns VmRSS in KiB from the contents of /proc/PID/status.
func parseVmRSS(data []byte) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("malformed VmRSS line %q", line)
		}
		return strconv.ParseInt(f[0], 10, 64)
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("no VmRSS line (a kernel thread or a zombie?)")
}

// readProcStat reads /proc/PID/stat.
func readProcStat(pid int) (procStat, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	s, err := parseProcStat(data)
	if err != nil {
		return procStat{}, fmt.Errorf("pid %d: %w", pid, err)
	}
	return s, nil
}

// readRSS reads VmRSS of one process, in KiB.
func readRSS(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	kb, err := parseVmRSS(data)
	if err != nil {
		return 0, fmt.Errorf("pid %d: %w", pid, err)
	}
	return kb, nil
}

// processTree returns pid followed by all its descendants, found by
// scanning the parent PID of every process in /proc (this works without
// CONFIG_PROC_CHILDREN).
func processTree(pid int) []int {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	children := make(map[int][]int)
	for _, d := range dirs {
		p, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		s, err := readProcStat(p)
		if err != nil {
			continue // exited meanwhile
		}
		children[s.PPID] = append(children[s.PPID], p)
	}
	tree := []int{pid}
	for i := 0; i < len(tree); i++ {
		tree = append(tree, children[tree[i]]...)
	}
	return tree
}

// treeCPU sums user plus system ticks over pids.
func treeCPU(pids []int) (uint64, error) {
	var sum uint64
	for _, p := range pids {
		s, err := readProcStat(p)
		if err != nil {
			return 0, err
		}
		sum += s.CPUTicks()
	}
	return sum, nil
}

// treeRSS sums VmRSS over pids, in KiB.
func treeRSS(pids []int) (int64, error) {
	var sum int64
	for _, p := range pids {
		kb, err := readRSS(p)
		if err != nil {
			return 0, err
		}
		sum += kb
	}
	return sum, nil
}
