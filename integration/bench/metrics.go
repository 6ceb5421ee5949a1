package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// metrics are tokenkeeper's Prometheus series, keyed by name and labels as
// written ("tokenkeeper_grants_total{outcome=\"success\"}").
type metrics map[string]float64

// scrape reads tokenkeeper's metrics endpoint.
func scrape(ctx context.Context, url string) (metrics, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metrics: HTTP %d", resp.StatusCode)
	}
	m := metrics{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		i := strings.LastIndexByte(line, ' ')
		if strings.HasPrefix(line, "#") || i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			m[line[:i]] = v
		}
	}
	return m, sc.Err()
}

// sum adds the series of one metric name whose labels contain match.
func (m metrics) sum(name, match string) float64 {
	var s float64
	for k, v := range m {
		if (k == name || strings.HasPrefix(k, name+"{")) && strings.Contains(k, match) {
			s += v
		}
	}
	return s
}

// grants is the number of refresh grants tokenkeeper has made, and how many failed.
func (m metrics) grants() (all, failed float64) {
	all = m.sum("tokenkeeper_grants_total", "")
	return all, all - m.sum("tokenkeeper_grants_total", `outcome="success"`)
}
