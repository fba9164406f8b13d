// Package promtest scrapes a Prometheus endpoint over HTTP and reads values
// out of the scrape, for the tests of the metrics adapter and the examples.
package promtest

import (
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
)

// Families is one scrape: metric name → family.
type Families map[string]*dto.MetricFamily

// client keeps no idle connections, so no goroutine outlives a scrape
// (the tests check with goleak).
var client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// Get GETs url with the scrapes' client and returns the status and body.
func Get(url string) (int, []byte, error) {
	resp, err := client.Get(url)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// Scrape GETs url (a /metrics endpoint) and parses the text exposition.
func Scrape(t testing.TB, url string) Families {
	t.Helper()
	f, err := TryScrape(url)
	require.NoError(t, err)
	return f
}

// TryScrape is Scrape returning its error, for use outside the test's
// goroutine.
func TryScrape(url string) (Families, error) {
	resp, err := client.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("parsing the scrape of %s: %w", url, err)
	}
	return Families(fams), nil
}

// Series returns the metrics of family name whose labels include every
// given pair (label, value, label, value, ...).
func (f Families) Series(name string, labels ...string) []*dto.Metric {
	fam := f[name]
	if fam == nil {
		return nil
	}
	var out []*dto.Metric
next:
	for _, m := range fam.GetMetric() {
		have := map[string]string{}
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue next
			}
		}
		out = append(out, m)
	}
	return out
}

// Value is the sum of the values (counter, gauge, or a histogram's sample
// count) of the series of name matching labels; -1 when there is none.
func (f Families) Value(name string, labels ...string) float64 {
	ms := f.Series(name, labels...)
	if len(ms) == 0 {
		return -1
	}
	var v float64
	for _, m := range ms {
		switch {
		case m.Counter != nil:
			v += m.GetCounter().GetValue()
		case m.Gauge != nil:
			v += m.GetGauge().GetValue()
		case m.Histogram != nil:
			v += float64(m.GetHistogram().GetSampleCount())
		case m.Untyped != nil:
			v += m.GetUntyped().GetValue()
		}
	}
	return v
}

// LabelValues lists the values label takes among the series of name
// matching labels, sorted.
func (f Families) LabelValues(name, label string, labels ...string) []string {
	seen := map[string]bool{}
	for _, m := range f.Series(name, labels...) {
		for _, lp := range m.GetLabel() {
			if lp.GetName() == label {
				seen[lp.GetValue()] = true
			}
		}
	}
	var out []string
	for v := range seen {
		out = append(out, v)
	}
	sort.Strings(out)
	return out
}

// Names lists the family names that start with prefix, sorted.
func (f Families) Names(prefix string) []string {
	var out []string
	for n := range f {
		if strings.HasPrefix(n, prefix) {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}
