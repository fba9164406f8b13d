package readme

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// imports are what the snippets may use; each generated file uses every one
// of them (blankUses), so a snippet need not list its own.
var imports = []string{
	"bytes", "context", "encoding/json", "errors", "fmt", "log/slog", "os", "syscall", "testing", "time",
	"github.com/jackc/pgx/v5", "github.com/jackc/pgx/v5/pgxpool",
	"github.com/twmb/franz-go/pkg/kadm", "github.com/twmb/franz-go/pkg/kfake", "github.com/twmb/franz-go/pkg/kgo",
	"golang.org/x/sync/errgroup",
	"github.com/exactlyonce/exactly/pipeline", "github.com/exactlyonce/exactly/sinks",
	"github.com/exactlyonce/exactly/sinks/kafkasink", "github.com/exactlyonce/exactly/sinks/pgsink",
}

const blankUses = `var (
	_ = bytes.ToUpper
	_ = context.Background
	_ = json.Marshal
	_ = errors.New
	_ = fmt.Sprint
	_ = slog.New
	_ = os.Stderr
	_ = syscall.ECONNREFUSED
	_ = testing.Short
	_ = time.Second
	_ = pgx.Identifier{}
	_ = pgxpool.New
	_ = kadm.NewClient
	_ = kfake.NewCluster
	_ = kgo.NewClient
	_ = errgroup.WithContext
	_ = pipeline.New[*kafkasink.Writer]
	_ = sinks.IsRetryable
	_ = kafkasink.New
	_ = pgsink.New
)
`

// helpers are what the snippets refer to without defining: the user's own
// program around them.
const helpers = `
// The user's other worker and pipeline, in the embedding snippet.
var (
	httpServer     interface{ Run(context.Context) error }
	ordersPipeline *pipeline.Pipeline[*kafkasink.Writer]
)
`

var goBlock = regexp.MustCompile("(?s)```go\n(.*?)```")

// snippets are the README's Go blocks.
func snippets(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	require.NoError(t, err)
	var out []string
	for _, m := range goBlock.FindAllStringSubmatch(string(b), -1) {
		out = append(out, m[1])
	}
	return out
}

func header(pkg string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "// Code generated from README.md by internal/readme; DO NOT EDIT.\n\npackage %s\n\nimport (\n", pkg)
	for _, imp := range imports {
		fmt.Fprintf(&b, "\t%q\n", imp)
	}
	b.WriteString(")\n\n" + blankUses)
	return b.String()
}

// TestReadmeSnippetsCompile puts each Go block of README.md into a package
// of its own — a block that declares functions as a file, any other block
// as the body of func(ctx context.Context) error — and vets and tests it
// with the go command, so that every snippet compiles as written. A block
// that declares a Test function is run, too.
func TestReadmeSnippetsCompile(t *testing.T) {
	if testing.Short() {
		t.Skip("builds packages with the go command")
	}
	blocks := snippets(t)
	require.GreaterOrEqual(t, len(blocks), 4, "README.md has fewer Go blocks than expected")
	// A directory starting with '_' is inside the module (so the module's
	// packages and go.sum apply) but outside ./... patterns.
	dir, err := os.MkdirTemp(".", "_snippets")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })

	var body, files strings.Builder
	body.WriteString(header("snippets") + helpers)
	files.WriteString(header("snippets"))
	for i, blk := range blocks {
		if strings.HasPrefix(blk, "func ") {
			fmt.Fprintf(&files, "\n// README.md Go block %d\n%s\n", i+1, blk)
			continue
		}
		fmt.Fprintf(&body, "\n// README.md Go block %d\nfunc snippet%d(ctx context.Context) error {\n%s}\n", i+1, i+1, blk)
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "snippets.go"), []byte(body.String()), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "snippets_test.go"), []byte(files.String()), 0o644))

	pkg := "./" + filepath.ToSlash(dir)
	for _, args := range [][]string{{"vet", pkg}, {"test", "-count=1", pkg}} {
		cmd := exec.Command("go", args...)
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "go %s on the README's Go blocks:\n%s\n--- generated:\n%s\n%s",
			strings.Join(args, " "), out, numbered(body.String()), numbered(files.String()))
	}
}

// numbered prefixes each line with its number, to read the go command's
// errors against.
func numbered(s string) string {
	lines := strings.Split(s, "\n")
	for i := range lines {
		lines[i] = fmt.Sprintf("%4d  %s", i+1, lines[i])
	}
	return strings.Join(lines, "\n")
}
