package main

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestEnrich(t *testing.T) {
	src := SourceRef{Topic: "orders", Partition: 2, Offset: 41}
	e, err := Enrich([]byte(`{"order_id":"o-1","customer_id":"c-7","currency":"eur","lines":[
		{"sku":"A-100","qty":2,"unit_price":"12.50"},{"sku":"B-310","qty":1,"unit_price":"0.5"}]}`), src)
	require.NoError(t, err)
	require.Equal(t, "EUR", e.OriginalCurrency)
	require.Equal(t, []EnrichedLine{
		{SKU: "A-100", Qty: 2, UnitPriceMinor: 1250, LineTotalMinor: 2500},
		{SKU: "B-310", Qty: 1, UnitPriceMinor: 50, LineTotalMinor: 50},
	}, e.Lines)
	require.Equal(t, int64(2550), e.TotalMinor)
	require.Equal(t, int64(2754), e.TotalUSDCents) // 25.50 EUR * 1.08 = 27.54 USD
	require.Equal(t, src, e.Source)

	// Yen have no minor unit; 1000 JPY * 0.0067 = 6.70 USD.
	e, err = Enrich([]byte(`{"order_id":"o-2","customer_id":"c-1","currency":"JPY","lines":[{"sku":"X","qty":1,"unit_price":"1000"}]}`), src)
	require.NoError(t, err)
	require.Equal(t, int64(670), e.TotalUSDCents)
}

func TestEnrichRejects(t *testing.T) {
	cases := map[string]string{
		"truncated json":   `{"order_id": "o-1", "customer_id": `,
		"unknown field":    `{"order_id":"o-1","customer_id":"c","currency":"USD","lines":[{"sku":"a","qty":1,"unit_price":"1"}],"x":1}`,
		"no order id":      `{"customer_id":"c","currency":"USD","lines":[{"sku":"a","qty":1,"unit_price":"1"}]}`,
		"no customer":      `{"order_id":"o-1","currency":"USD","lines":[{"sku":"a","qty":1,"unit_price":"1"}]}`,
		"unknown currency": `{"order_id":"o-1","customer_id":"c","currency":"XXX","lines":[{"sku":"a","qty":1,"unit_price":"1"}]}`,
		"no lines":         `{"order_id":"o-1","customer_id":"c","currency":"USD","lines":[]}`,
		"negative qty":     `{"order_id":"o-1","customer_id":"c","currency":"USD","lines":[{"sku":"a","qty":-1,"unit_price":"1"}]}`,
		"comma decimal":    `{"order_id":"o-1","customer_id":"c","currency":"USD","lines":[{"sku":"a","qty":1,"unit_price":"12,50"}]}`,
		"too many digits":  `{"order_id":"o-1","customer_id":"c","currency":"USD","lines":[{"sku":"a","qty":1,"unit_price":"1.005"}]}`,
		"negative price":   `{"order_id":"o-1","customer_id":"c","currency":"USD","lines":[{"sku":"a","qty":1,"unit_price":"-1"}]}`,
		"no sku":           `{"order_id":"o-1","customer_id":"c","currency":"USD","lines":[{"qty":1,"unit_price":"1"}]}`,
	}
	for name, raw := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Enrich([]byte(raw), SourceRef{})
			require.Error(t, err)
			require.True(t, errors.Is(err, errInvalid), "%v is not a validation error", err)
		})
	}
}

// The generator's malformed events are exactly the ones Enrich rejects.
func TestGeneratorMatchesValidation(t *testing.T) {
	g := newGenerator(7, 10)
	bad := 0
	for i := range 5000 {
		_, v, malformed := g.next(i)
		_, err := Enrich(v, SourceRef{})
		require.Equal(t, malformed, err != nil, "event %d: %s: %v", i, v, err)
		if malformed {
			bad++
		}
	}
	require.InDelta(t, 500, bad, 100)
}
