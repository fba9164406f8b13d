package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/exactlyonce/exactly/pipeline/doctor"
)

// pgTable parses "schema.table" (or "table", in schema public) into a
// quoted identifier.
func pgTable(s string) (string, error) {
	parts := strings.Split(s, ".")
	switch {
	case len(parts) == 1 && parts[0] != "":
		return pgx.Identifier{"public", parts[0]}.Sanitize(), nil
	case len(parts) == 2 && parts[0] != "" && parts[1] != "":
		return pgx.Identifier{parts[0], parts[1]}.Sanitize(), nil
	}
	return "", fmt.Errorf("-pg-table %q: give schema.table, e.g. public.exactly_offsets", s)
}

// pgConnect opens one connection to url.
func pgConnect(ctx context.Context, url string) (*pgx.Conn, error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("connecting to Postgres (-pg): %w", err)
	}
	return conn, nil
}

// pgCommitted reads group's committed offsets for topics from exactly's
// Postgres offsets table (columns consumer_group, topic, partition,
// next_offset).
func pgCommitted(ctx context.Context, conn *pgx.Conn, table, group string, topics []string) (doctor.Committed, error) {
	q := `SELECT topic, partition, next_offset FROM ` + table + ` WHERE consumer_group = $1 AND topic = ANY($2)`
	rows, err := conn.Query(ctx, q, group, topics)
	if err != nil {
		return nil, fmt.Errorf("reading offsets from %s: %w (is -pg-table the pipeline's offsets table, with columns consumer_group, topic, partition, next_offset?)", table, err)
	}
	c := doctor.Committed{}
	var (
		topic string
		part  int32
		next  int64
	)
	_, err = pgx.ForEachRow(rows, []any{&topic, &part, &next}, func() error {
		c.Set(topic, part, next)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading offsets from %s: %w", table, err)
	}
	return c, nil
}

// pgOutputs runs query (one column: the identity of each result row, in
// the order the rows were written) and returns the rows as outputs of
// domain 0 of "sql".
func pgOutputs(ctx context.Context, conn *pgx.Conn, query string) ([]doctor.Keyed, error) {
	rows, err := conn.Query(ctx, query)
	if err != nil {
		return nil, fmt.Errorf("-sql %q: %w", query, err)
	}
	defer rows.Close()
	if n := len(rows.FieldDescriptions()); n != 1 {
		return nil, fmt.Errorf("-sql %q returns %d columns: select exactly one, the identity (e.g. select id from t order by seq)", query, n)
	}
	var out []doctor.Keyed
	for i := int64(0); rows.Next(); i++ {
		vals, err := rows.Values()
		if err != nil {
			return nil, fmt.Errorf("-sql %q row %d: %w", query, i, err)
		}
		id := ""
		switch v := vals[0].(type) {
		case nil:
			return nil, fmt.Errorf("-sql %q row %d: the identity is NULL", query, i)
		case string:
			id = v
		case []byte:
			id = string(v)
		default:
			id = fmt.Sprint(v)
		}
		out = append(out, doctor.Keyed{Pos: doctor.Position{Where: "sql", Domain: 0, Offset: i}, ID: id})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("-sql %q: %w", query, err)
	}
	return out, nil
}
