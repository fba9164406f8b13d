package chaos

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// pgCrashSchedule SIGKILLs each worker twice at its COMMIT, through the
// cell's Postgres proxy (Cell.PGCrash): "before" kills it when one of its
// COMMITs arrives at the proxy, which then drops that COMMIT (the server
// rolls the transaction back when the connection closes); "after" kills it
// when the server's CommandComplete for a COMMIT arrives, which the proxy then
// drops (the transaction committed; the worker never learnt it). The k-th
// kill is armed at >= 15% + k·70%/(2·workers) progress; the worker is started
// again at once and its restart-to-first-commit measured, as in the bounce
// cells.
func pgCrashSchedule(ctx context.Context, r *Run) error {
	phase := r.Cell.PGCrash
	w := r.Cell.Workers
	total := 2 * w
	for k := 0; k < total; k++ {
		if err := r.WaitProgress(ctx, 0.15+0.70*float64(k)/float64(total), progressTimeout); err != nil {
			return err
		}
		id := "w" + strconv.Itoa(k%w+1)
		p := r.Live(id)
		if p == nil {
			return fmt.Errorf("no live worker %s", id)
		}
		var stopErr error
		t := newTrigger(func(worker string, _ int, key int16) bool { return worker == id && key == phaseKey(phase) },
			func(string, int) { stopErr = r.Stop(p, syscall.SIGKILL) })
		r.arm(t)
		done, err := r.awaitUnlessDone(ctx, t, time.Minute, id+"'s next COMMIT")
		if r.disarm(t) {
			done, err = false, nil // it fired after all: go on and heal it
		}
		if err != nil {
			return err
		}
		if done {
			r.Note("kill %d: none, the whole input was committed before %s's next COMMIT", k+1, id)
			continue
		}
		if stopErr != nil {
			return stopErr
		}
		f := r.faultState()
		f.mu.Lock()
		f.pgCrash[phase]++
		f.mu.Unlock()
		at := r.Progress()
		np, err := r.Start(id)
		if err != nil {
			return err
		}
		took, err := r.firstCommitOrDone(ctx, np, 90*time.Second)
		if err != nil {
			r.Fail("%v", err)
			continue
		}
		if took == 0 {
			r.Note("SIGKILL %s %s its COMMIT at %.0f%%: the whole input was committed before its restart committed anything", id, phase, 100*at)
			continue
		}
		r.mu.Lock()
		r.restarts = append(r.restarts, took)
		r.mu.Unlock()
		r.logf("SIGKILL %s %s its COMMIT at %.0f%%: restart to first commit %v", id, phase, 100*at, took.Round(time.Millisecond))
	}
	r.Note("%d workers SIGKILLed %s a COMMIT (the proxy %s), the k-th at >= 15%%+k*%.1f%% progress; restart to first commit: %v",
		total, phase, map[string]string{"before": "did not forward it", "after": "dropped the server's answer"}[phase],
		70/float64(total), r.restartsCopy())
	return nil
}

// pgCluster finds the Debian/Ubuntu Postgres cluster (version, name) that
// listens on port, with pg_lsclusters.
func pgCluster(ctx context.Context, port uint16) (string, string, error) {
	out, err := exec.CommandContext(ctx, "pg_lsclusters", "-h").Output()
	if err != nil {
		return "", "", fmt.Errorf("pg_lsclusters: %w (the pg-immediate-restart cell needs the postgresql-common tools and a server they manage)", err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) >= 4 && f[2] == strconv.Itoa(int(port)) {
			if f[3] != "online" {
				return "", "", fmt.Errorf("cluster %s/%s on port %d is %s", f[0], f[1], port, f[3])
			}
			return f[0], f[1], nil
		}
	}
	return "", "", fmt.Errorf("pg_lsclusters lists no cluster on port %d:\n%s", port, out)
}

// pgRestartSchedule restarts the Postgres server itself, twice (at >= 30%
// and >= 65% progress), with `pg_ctlcluster <ver> <name> restart -m
// immediate`: no shutdown checkpoint, every connection cut, crash recovery
// at start. This is the SHARED server of EXACTLY_PG_URL: every other client
// of it loses its connections too. It notes how long the restart took, how
// many other sessions were connected, and the time from the restart's end to
// the first commit of a batch begun after it.
func pgRestartSchedule(ctx context.Context, r *Run) error {
	pc := r.pool.Config().ConnConfig
	if pc.Host != "127.0.0.1" && pc.Host != "localhost" && !strings.HasPrefix(pc.Host, "/") {
		return fmt.Errorf("Postgres at %s: the restart cell restarts only a local server", pc.Host)
	}
	ver, name, err := pgCluster(ctx, pc.Port)
	if err != nil {
		return err
	}
	for i, at := range []float64{0.30, 0.65} {
		if err := r.WaitProgress(ctx, at, progressTimeout); err != nil {
			return err
		}
		var others int
		if err := r.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE backend_type = 'client backend' AND application_name NOT LIKE $1 AND pid <> pg_backend_pid()`,
			"chaos-"+r.Cfg.RunID+"-%").Scan(&others); err != nil {
			return fmt.Errorf("counting the other sessions: %w", err)
		}
		from := r.Progress()
		start := time.Now()
		cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		out, err := exec.CommandContext(cctx, "pg_ctlcluster", ver, name, "restart", "-m", "immediate").CombinedOutput()
		cancel()
		if err != nil {
			return fmt.Errorf("pg_ctlcluster %s %s restart -m immediate: %w: %s", ver, name, err, out)
		}
		up := time.Now()
		r.logf("pg_ctlcluster %s %s restart -m immediate took %v", ver, name, up.Sub(start).Round(time.Millisecond))
		var first commitEvent
		if err := r.WaitFor(ctx, 2*time.Minute, "a commit of a batch begun after the Postgres restart", func(context.Context) (bool, error) {
			c, ok := r.firstCommitAfter("", up)
			first = c
			return ok, nil
		}); err != nil {
			r.Fail("restart %d: %v", i+1, err)
			continue
		}
		r.Note("restart %d of Postgres %s/%s (-m immediate) at %.0f%%, %d other sessions connected: took %v; first commit of a batch begun after it: %s %v later",
			i+1, ver, name, 100*from, others, up.Sub(start).Round(time.Millisecond), first.worker, first.at.Sub(up).Round(time.Millisecond))
	}
	r.Note("the workers logged %d \"postgres unavailable\" and %d \"commit outcome unknown\"",
		r.countLogLines("postgres unavailable"), r.countLogLines("commit outcome unknown"))
	return nil
}
