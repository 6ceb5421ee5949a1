package serviceaccount

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestSSOLimits: the realm's settings are read once per 10 minutes, a
// failure too, and settings without the SSO values are an error.
func TestSSOLimits(t *testing.T) {
	now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	idle, max := 1800, 36000
	reads := 0
	answer := RealmSettings{SSOSessionIdle: &idle, SSOSessionMax: &max}
	var fail error
	l := NewSSOLimits(func(context.Context) (RealmSettings, error) {
		reads++
		return answer, fail
	}, func() time.Time { return now })
	steps := []struct {
		advance   time.Duration
		set       func()
		idle, max time.Duration
		err       bool
		reads     int
	}{
		{idle: 30 * time.Minute, max: 10 * time.Hour, reads: 1},
		{advance: 9 * time.Minute, set: func() { fail = errors.New("down") }, idle: 30 * time.Minute, max: 10 * time.Hour, reads: 1},
		{advance: time.Minute, err: true, reads: 2},
		{advance: time.Minute, set: func() { fail = nil }, err: true, reads: 2},
		{advance: 10 * time.Minute, set: func() { answer = RealmSettings{} }, err: true, reads: 3},
	}
	for i, s := range steps {
		now = now.Add(s.advance)
		if s.set != nil {
			s.set()
		}
		gotIdle, gotMax, err := l.Get(context.Background())
		if gotIdle != s.idle || gotMax != s.max || (err != nil) != s.err || reads != s.reads {
			t.Errorf("step %d: Get = %v, %v, %v after %d reads; want %v, %v, error %t after %d",
				i, gotIdle, gotMax, err, reads, s.idle, s.max, s.err, s.reads)
		}
	}
}
