package integration

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
)

// killStragglers kills processes whose environment points at the stack's
// state directory: children the hub started in sessions of their own
// (tokenkeeper, single-user servers, the proxy) if the hub could not stop them.
func killStragglers(stateDir string) int {
	entries, _ := os.ReadDir("/proc")
	needles := [][]byte{[]byte("\x00TK_STATE_DIR=" + stateDir + "\x00"), []byte("TOKENKEEPER_DATABASE=" + stateDir + "/")}
	self := os.Getpid()
	n := 0
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		environ, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		environ = append(append([]byte{0}, environ...), 0)
		if bytes.Contains(environ, needles[0]) || bytes.Contains(environ, needles[1]) {
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				n++
			}
		}
	}
	return n
}

// spawnRequests carries commands to the spawn thread.
var (
	spawnOnce     sync.Once
	spawnRequests chan spawnRequest
)

type spawnRequest struct {
	cmd  *exec.Cmd
	done chan error
}

// startOnSpawnThread starts cmd from one OS thread that lives as long as the
// program. A child's Pdeathsig fires when the thread that started it ends, not
// the process; starting every child from a thread that never ends makes the
// signal mean "the test binary or demo died", so Keycloak and the hub go
// with it even when deferred cleanup never runs (a test timeout, SIGKILL).
func startOnSpawnThread(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		spawnRequests = make(chan spawnRequest)
		go spawnThread()
	})
	req := spawnRequest{cmd: cmd, done: make(chan error, 1)}
	spawnRequests <- req
	return <-req.done
}

// spawnThread runs on its own locked OS thread and never returns.
func spawnThread() {
	runtime.LockOSThread()
	for req := range spawnRequests {
		req.done <- req.cmd.Start()
	}
}
