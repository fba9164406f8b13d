// Package integration holds exactly's end-to-end tests against real services:
// Apache Kafka 4.x (KRaft, run from its Maven Central jars by scripts/kafka.sh,
// no Docker) and PostgreSQL (Debian's package, run by scripts/pg.sh).
//
// Run them with
//
//	make services-up   # PostgreSQL, a single broker and a 3-node cluster
//	make integration   # go test ./integration/... with the variables below set
//	make kafka-down pg-down
//
// or all at once with `make test` (what CI runs).
//
// The services are found through environment variables:
//
//	EXACTLY_KAFKA_BROKERS     single broker, e.g. 127.0.0.1:9092 (Brokers)
//	EXACTLY_KAFKA_CLUSTER     3-node cluster, node ids 1,2,3, e.g.
//	                          127.0.0.1:9192,127.0.0.1:9193,127.0.0.1:9194 (ClusterBrokers)
//	EXACTLY_PG_URL            e.g. postgres://exactly:exactly@127.0.0.1:5432/exactly?sslmode=disable (PGURL)
//	EXACTLY_KAFKA_SCRIPT      script with `kill N` / `start N` for KillBroker and
//	                          StartBroker; default scripts/kafka.sh in the module root
//	EXACTLY_REQUIRE_SERVICES  "1": a missing or unreachable service fails the test;
//	                          otherwise such tests are skipped (plain `go test ./...`)
//	EXACTLY_PG_RESTART        command that restarts PostgreSQL for TestPostgresServerRestart;
//	                          default `pg_ctlcluster VERSION NAME restart -m immediate` for
//	                          the local cluster on the URL's port (pg_lsclusters)
//
// The single broker has replication factor 1 for its internal topics. The cluster
// has replication factor 3, min.insync.replicas=2 and unclean leader election off,
// so a test can SIGKILL the leader of a partition (KillBroker) and keep producing
// with acks=all, then bring it back (StartBroker). A killed node is fenced, and
// loses its leaderships, about 6 s (broker.session.timeout.ms) after the kill.
//
// Tests that use the cluster or kill nodes must not run in parallel with each other.
// TestPostgresServerRestart restarts the PostgreSQL server, which disrupts every
// other user of it: the tests of this package run one at a time, and `make test`
// runs them after the unit tests.
package integration
