package integration

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// RestartHub stops the hub (and with it the proxy, tokenkeeper and every
// server) and starts it again with env added to the stack's variables; a
// TOKENKEEPER_* variable there reaches tokenkeeper and overrides the stack's
// own setting. It waits for the hub's API only, since a test may mean
// tokenkeeper to fail; call it without env to return to the stack's own
// settings. Users, their auth_state and tokenkeeper's database survive.
func (s *Stack) RestartHub(ctx context.Context, env ...string) error {
	s.StopHub()
	killStragglers(s.StateDir())
	err := Poll(ctx, 30*time.Second, 250*time.Millisecond, func() (bool, error) {
		err := s.portsFree(0, 1, 23, 81)
		return err == nil, err
	})
	if err != nil {
		return fmt.Errorf("restart the hub: %w", err)
	}
	_, err = s.startHub(ctx, append(slices.Clip(s.cfg.Env), env...))
	return err
}
