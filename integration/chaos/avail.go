package chaos

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/twmb/franz-go/pkg/kadm"
)

// Accessors for tools built on the suite's machinery (the availability
// tool, integration/availability): what a schedule needs beyond Start, Stop
// and the progress waits.

// Fed is the number of input records the feeder has written so far.
func (r *Run) Fed() int64 { return r.fed.Load() }

// Group is the cell's consumer group.
func (r *Run) Group() string { return r.group }

// Input is the cell's input topic.
func (r *Run) Input() string { return r.in }

// Output is the cell's output topic (Kafka mode; "" in Postgres mode).
func (r *Run) Output() string { return r.out }

// Admin is the cell's admin client (valid while the cell runs).
func (r *Run) Admin() *kadm.Client { return r.adm }

// Name is the process's label in logs and tables: "<instance>.<gen>".
func (p *Proc) Name() string { return fmt.Sprintf("%s.%d", p.ID, p.Gen) }

// LogPath is the file the process's stderr (its log) goes to.
func (p *Proc) LogPath() string { return filepath.Join(p.run.Dir, p.Name()+".log") }

// ModuleRoot is the repository's root (where scripts/kafka.sh is), found
// from the working directory upwards; the drivers run from anywhere in it.
func ModuleRoot() (string, error) {
	d, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for ; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "scripts", "kafka.sh")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("cannot find the module root (scripts/kafka.sh) from the working directory")
		}
	}
}
