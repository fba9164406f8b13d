package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
)

// Order is an input event: an order as a shop front end emits it.
type Order struct {
	OrderID    string `json:"order_id"`
	CustomerID string `json:"customer_id"`
	Currency   string `json:"currency"`
	Lines      []Line `json:"lines"`
}

// Line is one line of an order. UnitPrice is a decimal string ("12.50") in
// the order's currency.
type Line struct {
	SKU       string `json:"sku"`
	Qty       int64  `json:"qty"`
	UnitPrice string `json:"unit_price"`
}

// Enriched is the output event: validated, with line totals, and with the
// order total normalised to US cents. It is keyed by customer.
type Enriched struct {
	OrderID          string         `json:"order_id"`
	CustomerID       string         `json:"customer_id"`
	Lines            []EnrichedLine `json:"lines"`
	OriginalCurrency string         `json:"original_currency"`
	TotalMinor       int64          `json:"total_minor"`     // in the original currency's minor unit
	TotalUSDCents    int64          `json:"total_usd_cents"` // normalised
	Source           SourceRef      `json:"source"`
}

// EnrichedLine is a line with its total in minor units.
type EnrichedLine struct {
	SKU            string `json:"sku"`
	Qty            int64  `json:"qty"`
	UnitPriceMinor int64  `json:"unit_price_minor"`
	LineTotalMinor int64  `json:"line_total_minor"`
}

// SourceRef names the input record an output came from.
type SourceRef struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
}

// currency: minor-unit digits and the rate to US cents per minor unit,
// as a rational number (num/den), so no float rounding creeps in.
type currency struct {
	digits   int
	num, den int64
}

var currencies = map[string]currency{
	"USD": {2, 1, 1},
	"EUR": {2, 108, 100}, // 1 EUR = 1.08 USD
	"GBP": {2, 127, 100}, // 1 GBP = 1.27 USD
	"JPY": {0, 67, 100},  // 1 JPY = 0.0067 USD = 0.67 cents
	"CHF": {2, 113, 100},
}

// errInvalid marks validation failures: the event is malformed and goes to
// the dead-letter topic rather than failing the batch.
var errInvalid = errors.New("invalid order")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errInvalid, fmt.Sprintf(format, args...))
}

// Enrich validates and enriches one raw order event.
func Enrich(raw []byte, src SourceRef) (Enriched, error) {
	var o Order
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&o); err != nil {
		return Enriched{}, invalid("not an order: %v", err)
	}
	if o.OrderID == "" {
		return Enriched{}, invalid("order_id is empty")
	}
	if o.CustomerID == "" {
		return Enriched{}, invalid("order %s: customer_id is empty", o.OrderID)
	}
	cur, ok := currencies[strings.ToUpper(o.Currency)]
	if !ok {
		return Enriched{}, invalid("order %s: unknown currency %q", o.OrderID, o.Currency)
	}
	if len(o.Lines) == 0 {
		return Enriched{}, invalid("order %s: no lines", o.OrderID)
	}
	e := Enriched{
		OrderID:          o.OrderID,
		CustomerID:       o.CustomerID,
		OriginalCurrency: strings.ToUpper(o.Currency),
		Source:           src,
		Lines:            make([]EnrichedLine, 0, len(o.Lines)),
	}
	for i, l := range o.Lines {
		if l.SKU == "" {
			return Enriched{}, invalid("order %s line %d: sku is empty", o.OrderID, i)
		}
		if l.Qty <= 0 || l.Qty > 10_000 {
			return Enriched{}, invalid("order %s line %d: quantity %d out of range 1..10000", o.OrderID, i, l.Qty)
		}
		price, err := parseMinor(l.UnitPrice, cur.digits)
		if err != nil {
			return Enriched{}, invalid("order %s line %d: unit price %q: %v", o.OrderID, i, l.UnitPrice, err)
		}
		total := price * l.Qty
		e.Lines = append(e.Lines, EnrichedLine{SKU: l.SKU, Qty: l.Qty, UnitPriceMinor: price, LineTotalMinor: total})
		e.TotalMinor += total
	}
	// Round half up to whole US cents.
	e.TotalUSDCents = (e.TotalMinor*cur.num*2 + cur.den) / (2 * cur.den)
	return e, nil
}

// parseMinor parses a non-negative decimal with at most digits fraction
// digits into minor units.
func parseMinor(s string, digits int) (int64, error) {
	whole, frac, hasDot := strings.Cut(s, ".")
	if whole == "" || (hasDot && frac == "") {
		return 0, errors.New("not a decimal")
	}
	if len(frac) > digits {
		return 0, fmt.Errorf("more than %d decimal places", digits)
	}
	frac += strings.Repeat("0", digits-len(frac))
	w, err := strconv.ParseUint(whole, 10, 40)
	if err != nil {
		return 0, errors.New("not a non-negative decimal")
	}
	var f uint64
	if digits > 0 {
		if f, err = strconv.ParseUint(frac, 10, 16); err != nil {
			return 0, errors.New("not a decimal")
		}
	}
	scale := uint64(1)
	for range digits {
		scale *= 10
	}
	return int64(w*scale + f), nil
}

// generator makes a deterministic stream of order events, a share of them
// malformed in the ways real producers get wrong.
type generator struct {
	rng          *rand.Rand
	malformedPct float64
}

func newGenerator(seed uint64, malformedPct float64) *generator {
	return &generator{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), malformedPct: malformedPct}
}

var skus = []string{"A-100", "A-200", "B-310", "C-042", "D-777", "E-501", "F-900"}
var codes = []string{"USD", "EUR", "GBP", "JPY", "CHF"}

// next returns the i-th event's key and value, and whether it is malformed.
func (g *generator) next(i int) (key, value []byte, malformed bool) {
	customer := fmt.Sprintf("c-%04d", g.rng.IntN(2000))
	o := Order{OrderID: fmt.Sprintf("o-%08d", i), CustomerID: customer, Currency: codes[g.rng.IntN(len(codes))]}
	for range 1 + g.rng.IntN(4) {
		price := fmt.Sprintf("%d.%02d", 1+g.rng.IntN(200), g.rng.IntN(100))
		if o.Currency == "JPY" {
			price = strconv.Itoa(100 + g.rng.IntN(20000))
		}
		o.Lines = append(o.Lines, Line{SKU: skus[g.rng.IntN(len(skus))], Qty: int64(1 + g.rng.IntN(5)), UnitPrice: price})
	}
	if g.rng.Float64()*100 < g.malformedPct {
		malformed = true
		switch g.rng.IntN(5) {
		case 0:
			return []byte(customer), []byte(`{"order_id": "` + o.OrderID + `", "customer_id": `), true // truncated JSON
		case 1:
			o.Currency = "XXX"
		case 2:
			o.Lines[0].Qty = -1
		case 3:
			o.CustomerID = ""
		case 4:
			o.Lines[0].UnitPrice = "12,50"
		}
	}
	v, _ := json.Marshal(o)
	return []byte(customer), v, malformed
}
