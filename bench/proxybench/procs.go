package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// stopTimeout is how long a server gets to exit after its stop signal
// before it and its children are killed.
const stopTimeout = 5 * time.Second

// procs tracks every long-running process the harness started, so that
// whatever happens (an error, a signal) each is stopped by its PID and
// nothing else is.
type procs struct {
	mu   sync.Mutex
	live map[int]*proc
}

// proc is one started server process.
type proc struct {
	name    string
	cmd     *exec.Cmd
	stopSig syscall.Signal
	out     *limitedBuffer
	done    chan struct{} // closed when Wait returns
	waitErr error
}

func newProcs() *procs { return &procs{live: make(map[int]*proc)} }

// start starts a server process (not wrk, whose lifetime its context
// bounds). stopSig is the signal that asks it to shut down gracefully.
func (ps *procs) start(name string, stopSig syscall.Signal, dir string, env []string, argv ...string) (*proc, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	p := &proc{name: name, cmd: cmd, stopSig: stopSig, out: &limitedBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	// If the harness dies without running its cleanup (SIGKILL), the
	// kernel kills the direct child too. nginx's workers are the
	// master's children, not ours: stop() takes care of them.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	ps.mu.Lock()
	ps.live[cmd.Process.Pid] = p
	ps.mu.Unlock()
	return p, nil
}

// PID is the process ID of the started process.
func (p *proc) PID() int { return p.cmd.Process.Pid }

// exited reports whether the process has exited.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop asks the process to exit with its stop signal, then kills it and
// any descendants still alive after stopTimeout. Descendants are listed
// before the signal, while they are still the process's children.
func (ps *procs) stop(p *proc) {
	ps.mu.Lock()
	delete(ps.live, p.PID())
	ps.mu.Unlock()
	if p.exited() {
		return
	}
	tree := processTree(p.PID())
	starts := make(map[int]uint64, len(tree))
	for _, pid := range tree[1:] {
		if s, err := readProcStat(pid); err == nil {
			starts[pid] = s.Start
		}
	}
	_ = p.cmd.Process.Signal(p.stopSig)
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	// A child the stop left behind: only those listed above, and only if
	// the PID still names the same process (same start time) whose parent
	// is the process we started or, orphaned, init.
	for pid, start := range starts {
		s, err := readProcStat(pid)
		if err != nil || s.Start != start {
			continue
		}
		if s.PPID == p.PID() || s.PPID == 1 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// stopAll stops every process still running, for the exit path.
func (ps *procs) stopAll() {
	ps.mu.Lock()
	all := make([]*proc, 0, len(ps.live))
	for _, p := range ps.live {
		all = append(all, p)
	}
	ps.mu.Unlock()
	for _, p := range all {
		ps.stop(p)
	}
}

// output returns what the process wrote, for error messages.
func (p *proc) output() string { return p.out.String() }

// errExited reports a server that exited while the harness needed it.
var errExited = errors.New("exited")

// alive returns an error when the process has exited.
func (p *proc) alive() error {
	if p.exited() {
		return fmt.Errorf("%s (pid %d) %w: %v\n%s", p.name, p.PID(), errExited, p.waitErr, p.output())
	}
	return nil
}

// runWrk runs wrk to completion (bounded by ctx) and returns its stdout.
func runWrk(ctx context.Context, argv []string) (string, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%v: %w\n%s%s", argv, err, out.String(), errOut.String())
	}
	return out.String(), nil
}

// limitedBuffer keeps the first 64 KiB a child writes; what a server says
// first is what explains a failed start.
type limitedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() < 64<<10 {
		b.buf.Write(p)
	}
	return len(p), nil
}

func (b *limitedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
