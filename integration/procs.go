package integration

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
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
