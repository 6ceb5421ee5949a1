package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"
)

// target is one HTTP endpoint under load.
type target struct {
	Name, URL, Authorization string
}

// loadResult is one closed-loop run against one target.
type loadResult struct {
	Target   string
	Conns    int
	Requests int // answered 200 within the measured time
	Calls    int // answered 200, warm-up included
	Errors   int // other answers or failures within the measured time
	FirstErr string
	Elapsed  time.Duration
	RPS      float64
	P50, P99 time.Duration
}

// worker is one connection's closed loop: send, read the whole answer, repeat.
type worker struct {
	lat      []time.Duration
	calls    int
	errors   int
	firstErr string
}

// runLoad keeps conns keep-alive connections busy against t: warm for warm,
// then records every request that starts and ends within the next run.
func runLoad(ctx context.Context, t target, conns int, warm, run time.Duration) (loadResult, error) {
	tr := &http.Transport{
		MaxIdleConns: conns, MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns,
		DisableCompression: true, IdleConnTimeout: time.Minute,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	from := time.Now().Add(warm)
	until := from.Add(run)
	workers := make([]worker, conns)
	var wg sync.WaitGroup
	for i := range workers {
		wg.Go(func() { workers[i].loop(ctx, client, t, from, until) })
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return loadResult{}, fmt.Errorf("load on %s: %w", t.Name, err)
	}
	return summarize(t, conns, run, workers), nil
}

func (w *worker) loop(ctx context.Context, client *http.Client, t target, from, until time.Time) {
	w.lat = make([]time.Duration, 0, 1<<14)
	for ctx.Err() == nil {
		start := time.Now()
		if !start.Before(until) {
			return
		}
		err := call(ctx, client, t)
		end := time.Now()
		if err == nil {
			w.calls++
		}
		if start.Before(from) || end.After(until) {
			continue
		}
		if err != nil {
			w.errors++
			if w.firstErr == "" {
				w.firstErr = err.Error()
			}
			continue
		}
		w.lat = append(w.lat, end.Sub(start))
	}
}

// call sends one GET and reads the whole answer; anything but 200 is an error.
func call(ctx context.Context, client *http.Client, t target) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.URL, nil)
	if err != nil {
		return err
	}
	if t.Authorization != "" {
		req.Header.Set("Authorization", t.Authorization)
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return nil
}

func summarize(t target, conns int, run time.Duration, workers []worker) loadResult {
	r := loadResult{Target: t.Name, Conns: conns, Elapsed: run}
	var lat []time.Duration
	for _, w := range workers {
		lat = append(lat, w.lat...)
		r.Calls += w.calls
		r.Errors += w.errors
		if r.FirstErr == "" {
			r.FirstErr = w.firstErr
		}
	}
	slices.Sort(lat)
	r.Requests = len(lat)
	r.RPS = float64(len(lat)) / run.Seconds()
	r.P50, r.P99 = percentile(lat, 0.50), percentile(lat, 0.99)
	return r
}

// percentile returns the nearest-rank percentile of sorted latencies.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
