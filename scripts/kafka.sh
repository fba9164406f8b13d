#!/usr/bin/env bash
# Run Apache Kafka (KRaft mode, no ZooKeeper) from its Maven Central jars, for the
# integration tests. No Docker, no Kafka tarball: scripts/kafka/pom.xml fetches the
# jars once into a cache outside git, and this script formats and starts nodes that
# are each broker and controller, listening on 127.0.0.1 only.
#
# Usage: scripts/kafka.sh COMMAND
#   up              one node at 127.0.0.1:9092 (controller 127.0.0.1:9093; ports
#                   shown for the default EXACTLY_KAFKA_PORT_BASE)
#   cluster-up      three nodes, ids 1,2,3, brokers 127.0.0.1:9192-9194
#                   (controllers 127.0.0.1:9292-9294, a 3-voter quorum)
#   down [single|cluster]
#                   stop the nodes this script started (all by default) and
#                   remove their data
#   kill N          kill -9 node N (1-3) of the cluster and wait until it is gone
#   start N         start node N of the cluster again on its existing data and
#                   wait until it serves metadata (and, if all 3 run, full ISRs)
#   status          show which nodes run
#   fetch           only download the jars
#   tools-fetch     download Kafka's command-line tools (org.apache.kafka:kafka-tools,
#                   the broker's version: kafka-verifiable-producer...) and print
#                   the directory of their jars (a Java classpath of DIR/*; its
#                   log4j2.properties sends the tools' logs to stderr)
#
# Environment:
#   EXACTLY_CACHE            jar cache (default ~/.cache/exactly)
#   EXACTLY_STATE            data dirs, logs, pid files (default /tmp/exactly-kafka)
#   EXACTLY_KAFKA_VERSION    Kafka release (default 4.1.2)
#   EXACTLY_KAFKA_HEAP       max heap per node (default 512m)
#   EXACTLY_KAFKA_READY_TIMEOUT  seconds to wait for a node to answer (default 90)
#   EXACTLY_KAFKA_PORT_BASE  port of the single broker (default 9092); every
#                            other port follows from it: single controller
#                            BASE+1, cluster brokers BASE+100..102, cluster
#                            controllers BASE+200..202. Use it with its own
#                            EXACTLY_STATE to run a second set of nodes, e.g.
#                            EXACTLY_KAFKA_PORT_BASE=9392 EXACTLY_STATE=/tmp/x
#                            gives a cluster at 9492-9494 (controllers 9592-9594).
#   EXACTLY_KAFKA_REQUEST_TIMEOUT_MS  the brokers' request.timeout.ms (default:
#                            Kafka's, 30000). It also bounds how long a
#                            transaction coordinator waits before it retries a
#                            failed write of a transaction's completion (after
#                            a broker failure): docs/RELIABILITY.md, "The 30 s
#                            stall". make availability sets 6000.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
readonly SCRIPT_DIR REPO_ROOT
readonly KAFKA_VERSION="${EXACTLY_KAFKA_VERSION:-4.1.2}"
readonly CACHE_DIR="${EXACTLY_CACHE:-${HOME:-/root}/.cache/exactly}"
readonly KAFKA_HOME="$CACHE_DIR/kafka-$KAFKA_VERSION"
readonly LIBS="$KAFKA_HOME/libs"
readonly LIBS_MARKER="$KAFKA_HOME/.complete"
readonly STATE="${EXACTLY_STATE:-/tmp/exactly-kafka}"
readonly HEAP="${EXACTLY_KAFKA_HEAP:-512m}"
readonly READY_TIMEOUT="${EXACTLY_KAFKA_READY_TIMEOUT:-90}"
readonly PORT_BASE="${EXACTLY_KAFKA_PORT_BASE:-9092}"
[[ $PORT_BASE =~ ^[0-9]+$ ]] && ((PORT_BASE >= 1024 && PORT_BASE <= 65000)) ||
	{ printf 'kafka.sh: ERROR: EXACTLY_KAFKA_PORT_BASE must be a port number in 1024-65000 (got %s)\n' "$PORT_BASE" >&2; exit 1; }
readonly REQUEST_TIMEOUT_MS="${EXACTLY_KAFKA_REQUEST_TIMEOUT_MS:-}"
[[ -z $REQUEST_TIMEOUT_MS || $REQUEST_TIMEOUT_MS =~ ^[1-9][0-9]*$ ]] ||
	{ printf 'kafka.sh: ERROR: EXACTLY_KAFKA_REQUEST_TIMEOUT_MS must be a positive number of milliseconds (got %s)\n' "$REQUEST_TIMEOUT_MS" >&2; exit 1; }
readonly READY_BIN="$STATE/bin/kafkaready"
readonly CLUSTER_IDS=(1 2 3)

log() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}

# --- node layout -------------------------------------------------------------

# node_name ID: "single" for the one-node setup, "nodeN" for cluster node N.
node_dir() { printf '%s/%s' "$STATE" "$1"; }
broker_port() {
	case "$1" in
	single) echo "$PORT_BASE" ;;
	node[123]) echo $((PORT_BASE + 99 + ${1#node})) ;;
	*) die "unknown node $1" ;;
	esac
}
controller_port() {
	case "$1" in
	single) echo $((PORT_BASE + 1)) ;;
	node[123]) echo $((PORT_BASE + 199 + ${1#node})) ;;
	*) die "unknown node $1" ;;
	esac
}
node_id() {
	case "$1" in
	single) echo 1 ;;
	node[123]) echo "${1#node}" ;;
	*) die "unknown node $1" ;;
	esac
}
cluster_brokers() {
	local out="" id
	for id in "${CLUSTER_IDS[@]}"; do
		out+="${out:+,}127.0.0.1:$(broker_port "node$id")"
	done
	echo "$out"
}

# --- processes ---------------------------------------------------------------

node_pid() {
	local f
	f="$(node_dir "$1")/pid"
	[[ -s $f ]] && cat "$f"
}

# pid_alive PID: the process exists, is not a zombie, and is a Kafka node.
pid_alive() {
	local pid=$1 stat
	[[ -n $pid && -r /proc/$pid/stat ]] || return 1
	stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || return 1
	stat="${stat##*) }"
	[[ ${stat:0:1} != Z ]] || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'kafka\.Kafka'
}

node_running() {
	local pid
	pid="$(node_pid "$1")" || return 1
	pid_alive "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

show_log() {
	local f
	f="$(node_dir "$1")/server.log"
	if [[ -f $f ]]; then
		log "last 50 lines of $f:"
		tail -n 50 "$f" >&2 || true
	else
		log "no log at $f"
	fi
}

# --- tools and jars ----------------------------------------------------------

apt_install() {
	command -v apt-get >/dev/null || die "$* missing and apt-get not available; install it by hand"
	[[ $(id -u) -eq 0 ]] || die "$* missing; run as root or install it by hand"
	log "installing $* with apt-get"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q >/dev/null
	apt-get install -y -q "$@" >/dev/null
}

ensure_tools() {
	command -v java >/dev/null || apt_install openjdk-17-jre-headless
	command -v mvn >/dev/null || apt_install maven
	if ! command -v go >/dev/null; then
		[[ -x /usr/local/go/bin/go ]] || die "go not found in PATH"
		PATH="/usr/local/go/bin:$PATH"
	fi
	local major
	major="$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java\.specification\.version = //p')"
	[[ ${major:-0} -ge 17 ]] || die "Kafka $KAFKA_VERSION needs Java 17+, found '${major:-?}' ($(command -v java))"
}

# with_lock CMD...: run CMD holding the cache lock (parallel `up` and `cluster-up`).
with_lock() {
	mkdir -p "$CACHE_DIR"
	(
		flock -w 900 9 || die "timed out waiting for lock $CACHE_DIR/.lock"
		"$@"
	) 9>"$CACHE_DIR/.lock"
}

# maven_copy POM OUTDIR WHAT: Maven copies the artifacts POM names for Kafka
# $KAFKA_VERSION into OUTDIR, logging to mvn.log beside it; on failure the
# script dies with the log's tail, naming WHAT.
maven_copy() {
	local pom=$1 out=$2 what=$3 home
	home="$(dirname "$out")"
	if ! (cd "$home" && mvn -B -q -Dstyle.color=never -f "$pom" dependency:copy-dependencies \
		-Dkafka.version="$KAFKA_VERSION" -DoutputDirectory="$out" >"$home/mvn.log" 2>&1); then
		tail -n 40 "$home/mvn.log" >&2 || true
		die "maven could not fetch $what $KAFKA_VERSION (log: $home/mvn.log)"
	fi
}

fetch_jars_locked() {
	if [[ -f $LIBS_MARKER && -f $LIBS/kafka_2.13-$KAFKA_VERSION.jar ]]; then
		return 0
	fi
	log "downloading Kafka $KAFKA_VERSION jars from Maven Central into $LIBS (once)"
	local t0=$SECONDS tmp="$KAFKA_HOME/libs.tmp"
	rm -rf "$tmp" "$LIBS" "$LIBS_MARKER"
	mkdir -p "$KAFKA_HOME"
	maven_copy "$SCRIPT_DIR/kafka/pom.xml" "$tmp" Kafka
	[[ -f $tmp/kafka_2.13-$KAFKA_VERSION.jar ]] || die "kafka_2.13-$KAFKA_VERSION.jar missing after download"
	mv "$tmp" "$LIBS"
	printf '%s\n' "$KAFKA_VERSION" >"$LIBS_MARKER"
	log "downloaded $(find "$LIBS" -name '*.jar' | wc -l) jars in $((SECONDS - t0))s"
}

readonly TOOLS_LIBS="$CACHE_DIR/kafka-tools-$KAFKA_VERSION/libs"

fetch_tools_locked() {
	if [[ -f $TOOLS_LIBS/.complete && -f $TOOLS_LIBS/kafka-tools-$KAFKA_VERSION.jar ]]; then
		cp "$SCRIPT_DIR/kafka/tools-log4j2.properties" "$TOOLS_LIBS/log4j2.properties"
		return 0
	fi
	log "downloading Kafka $KAFKA_VERSION tools (kafka-tools) from Maven Central into $TOOLS_LIBS (once)"
	local t0=$SECONDS home tmp
	home="$(dirname "$TOOLS_LIBS")"
	tmp="$home/libs.tmp"
	rm -rf "$tmp" "$TOOLS_LIBS"
	mkdir -p "$home"
	maven_copy "$SCRIPT_DIR/kafka/tools-pom.xml" "$tmp" kafka-tools
	[[ -f $tmp/kafka-tools-$KAFKA_VERSION.jar ]] || die "kafka-tools-$KAFKA_VERSION.jar missing after download"
	cp "$SCRIPT_DIR/kafka/tools-log4j2.properties" "$tmp/log4j2.properties"
	printf '%s\n' "$KAFKA_VERSION" >"$tmp/.complete"
	mv "$tmp" "$TOOLS_LIBS"
	log "downloaded $(find "$TOOLS_LIBS" -name '*.jar' | wc -l) tool jars in $((SECONDS - t0))s"
}

build_ready_locked() {
	mkdir -p "$STATE/bin"
	(cd "$REPO_ROOT" && go build -buildvcs=false -o "$READY_BIN" ./internal/cmd/kafkaready) ||
		die "could not build internal/cmd/kafkaready"
}

prepare() {
	ensure_tools
	with_lock fetch_jars_locked
	with_lock build_ready_locked
}

# --- format and launch -------------------------------------------------------

# write_props NODE MODE: MODE is "single" or "cluster".
write_props() {
	local node=$1 mode=$2 dir id bport cport rf isr voters="" vid
	dir="$(node_dir "$node")"
	id="$(node_id "$node")"
	bport="$(broker_port "$node")"
	cport="$(controller_port "$node")"
	if [[ $mode == single ]]; then
		rf=1 isr=1
	else
		rf=3 isr=2
		for vid in "${CLUSTER_IDS[@]}"; do
			voters+="${voters:+,}$vid@127.0.0.1:$(controller_port "node$vid")"
		done
	fi
	mkdir -p "$dir/data"
	{
		cat <<EOF
# Written by scripts/kafka.sh ($mode). Kafka $KAFKA_VERSION, KRaft combined mode.
process.roles=broker,controller
node.id=$id
listeners=PLAINTEXT://127.0.0.1:$bport,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$bport,CONTROLLER://127.0.0.1:$cport
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$dir/data

num.partitions=1
auto.create.topics.enable=true
default.replication.factor=$rf
min.insync.replicas=$isr
unclean.leader.election.enable=false
offsets.topic.replication.factor=$rf
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr
group.initial.rebalance.delay.ms=0
# Longest transaction.timeout.ms a producer may ask for (Kafka's default is 15 min).
transaction.max.timeout.ms=300000

# A node killed with -9 is fenced (and loses its leaderships) after this long
# without heartbeats; it also cannot re-register before then (defaults: 9 s / 2 s).
broker.session.timeout.ms=6000
broker.heartbeat.interval.ms=1000

# Small machine: fewer threads than the defaults.
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
background.threads=4
EOF
		if [[ -n $REQUEST_TIMEOUT_MS ]]; then
			printf '\n# EXACTLY_KAFKA_REQUEST_TIMEOUT_MS: inter-broker requests, and the longest a\n'
			printf '# transaction coordinator waits to retry a failed completion write.\n'
			echo "request.timeout.ms=$REQUEST_TIMEOUT_MS"
		fi
		if [[ $mode == single ]]; then
			echo "controller.quorum.bootstrap.servers=127.0.0.1:$cport"
		else
			echo "controller.quorum.voters=$voters"
		fi
	} >"$dir/server.properties"
}

java_opts() {
	local dir=$1
	printf '%s\n' \
		"-Xmx$HEAP" -Xms128m -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
		-XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
		-XX:MaxInlineLevel=15 -Djava.awt.headless=true \
		"-Dlog4j2.configurationFile=$SCRIPT_DIR/kafka/log4j2.properties" \
		"-Dkafka.logs.dir=$dir"
}

# format NODE CLUSTER_ID [StorageTool flags...]
format_node() {
	local node=$1 cid=$2 dir
	shift 2
	dir="$(node_dir "$node")"
	local -a opts
	mapfile -t opts < <(java_opts "$dir")
	if ! java "${opts[@]}" -cp "$LIBS/*" kafka.tools.StorageTool format \
		-t "$cid" -c "$dir/server.properties" "$@" >>"$dir/format.log" 2>&1; then
		tail -n 30 "$dir/format.log" >&2 || true
		die "formatting $node failed (log: $dir/format.log)"
	fi
}

launch_node() {
	local node=$1 dir port
	dir="$(node_dir "$node")"
	for port in "$(broker_port "$node")" "$(controller_port "$node")"; do
		port_open "$port" && die "port $port is already in use by something this script did not start (see: ss -ltnp 'sport = :$port')"
	done
	local -a opts
	mapfile -t opts < <(java_opts "$dir")
	printf '\n===== %s: starting %s (Kafka %s) =====\n' "$(date -Is)" "$node" "$KAFKA_VERSION" >>"$dir/server.log"
	rm -f "$dir/pid"
	# setsid: the node outlives this script and the shell/test that ran it; all fds
	# are redirected so a caller that waits for our output does not wait for Kafka.
	# shellcheck disable=SC2016 # $$, $1 and $@ are for the inner bash
	setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$dir/pid" \
		java "${opts[@]}" -cp "$LIBS/*" kafka.Kafka "$dir/server.properties" \
		</dev/null >>"$dir/server.log" 2>&1 &
	local i
	for ((i = 0; i < 50; i++)); do
		[[ -s $dir/pid ]] && break
		sleep 0.1
	done
	[[ -s $dir/pid ]] || die "$node did not write its pid file"
	log "started $node (node.id $(node_id "$node"), pid $(cat "$dir/pid"), broker 127.0.0.1:$(broker_port "$node"), log $dir/server.log)"
}

random_uuid() {
	# A Kafka Uuid: 16 random bytes, URL-safe base64 without padding. Like
	# Kafka's Uuid.randomUuid, never one that starts with '-': the storage
	# tool's argument parser would take it for a flag (1 start in 64 failed
	# with "argument --cluster-id/-t: expected one argument").
	local id
	while :; do
		id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
		[[ $id == -* ]] || break
	done
	printf '%s' "$id"
}

# wait_ready "NODE..." BROKERS EXPECT [kafkaready flags...]
wait_ready() {
	local nodes=$1 brokers=$2 expect=$3 pids="" n t0=$SECONDS
	shift 3
	for n in $nodes; do
		pids+="${pids:+,}$(node_pid "$n" || true)"
	done
	local rc=0
	"$READY_BIN" -brokers "$brokers" -expect "$expect" -timeout "${READY_TIMEOUT}s" -pids "$pids" "$@" >&2 || rc=$?
	if ((rc != 0)); then
		for n in $nodes; do
			node_running "$n" || log "$n is not running any more"
			show_log "$n"
		done
		if ((rc == 3)); then
			die "a Kafka node exited while starting (nodes: $nodes; logs under $STATE)"
		fi
		die "Kafka at $brokers did not become ready within ${READY_TIMEOUT}s (nodes: $nodes; logs under $STATE)"
	fi
	log "ready: $brokers in $((SECONDS - t0))s"
}

# --- commands ----------------------------------------------------------------

cmd_up() {
	local node=single
	local brokers
	brokers="127.0.0.1:$(broker_port "$node")"
	if node_running "$node"; then
		prepare
		if "$READY_BIN" -brokers "$brokers" -expect 1 -timeout 5s -quiet 2>/dev/null; then
			log "already up: $brokers (pid $(node_pid "$node"))"
			return 0
		fi
		log "$node is running but not answering yet; waiting"
		wait_ready "$node" "$brokers" 1
		return 0
	fi
	prepare
	local t0=$SECONDS dir
	dir="$(node_dir "$node")"
	rm -rf "$dir"
	write_props "$node" single
	format_node "$node" "$(random_uuid)" --standalone
	launch_node "$node"
	wait_ready "$node" "$brokers" 1 -check-topic
	log "single broker up at $brokers (Kafka $KAFKA_VERSION) in $((SECONDS - t0))s"
	echo "$brokers"
}

cmd_cluster_up() {
	local brokers id running=() stopped=()
	brokers="$(cluster_brokers)"
	for id in "${CLUSTER_IDS[@]}"; do
		if node_running "node$id"; then running+=("$id"); else stopped+=("$id"); fi
	done
	prepare
	local t0=$SECONDS nodes="node1 node2 node3"
	if ((${#stopped[@]} == 0)); then
		if "$READY_BIN" -brokers "$brokers" -expect 3 -timeout 5s -quiet 2>/dev/null; then
			log "already up: $brokers"
			return 0
		fi
		log "cluster is running but not answering yet; waiting"
	elif ((${#running[@]} > 0)); then
		# Partial cluster (e.g. a test killed a node): restart the missing ones on their data.
		for id in "${stopped[@]}"; do
			[[ -f $(node_dir "node$id")/data/meta.properties ]] ||
				die "node $id has no data but nodes ${running[*]} run; run '$0 down cluster' first"
			launch_node "node$id"
		done
	else
		local cid
		cid="$(random_uuid)"
		for id in "${CLUSTER_IDS[@]}"; do
			rm -rf "$(node_dir "node$id")"
			write_props "node$id" cluster
		done
		# One JVM per format is slow on 2 cores; run the three in parallel.
		local -a fpids=()
		for id in "${CLUSTER_IDS[@]}"; do
			format_node "node$id" "$cid" &
			fpids+=($!)
		done
		local p
		for p in "${fpids[@]}"; do wait "$p" || die "formatting failed"; done
		for id in "${CLUSTER_IDS[@]}"; do launch_node "node$id"; done
	fi
	wait_ready "$nodes" "$brokers" 3 -check-topic
	log "3-node cluster up at $brokers (Kafka $KAFKA_VERSION) in $((SECONDS - t0))s"
	echo "$brokers"
}

# stop_nodes NODE...: SIGTERM, wait, SIGKILL, remove the node dirs.
stop_nodes() {
	local n pid pids=() stopped=()
	for n in "$@"; do
		if node_running "$n"; then
			pid="$(node_pid "$n")"
			kill -TERM "$pid" 2>/dev/null || true
			pids+=("$pid")
			stopped+=("$n")
		fi
	done
	if ((${#pids[@]} > 0)); then
		log "stopping ${stopped[*]} (pids ${pids[*]})"
		local deadline=$((SECONDS + 20)) alive
		while :; do
			alive=()
			for pid in "${pids[@]}"; do pid_alive "$pid" && alive+=("$pid"); done
			((${#alive[@]} == 0)) && break
			if ((SECONDS >= deadline)); then
				log "still running after 20s, sending SIGKILL to ${alive[*]}"
				kill -KILL "${alive[@]}" 2>/dev/null || true
				wait_gone 10 "${alive[@]}"
				break
			fi
			sleep 0.2
		done
	fi
	for n in "$@"; do rm -rf "$(node_dir "$n")"; done
	if ((${#stopped[@]} > 0)); then log "stopped ${stopped[*]}; data removed"; fi
}

wait_gone() {
	local secs=$1 pid
	shift
	local deadline=$((SECONDS + secs))
	for pid in "$@"; do
		while pid_alive "$pid"; do
			((SECONDS < deadline)) || die "pid $pid still alive after ${secs}s"
			sleep 0.1
		done
	done
}

cmd_down() {
	local which=${1:-all}
	case "$which" in
	all) stop_nodes single node1 node2 node3 ;;
	single) stop_nodes single ;;
	cluster) stop_nodes node1 node2 node3 ;;
	*) die "usage: $0 down [single|cluster]" ;;
	esac
	log "down ($which)"
}

check_id() {
	[[ ${1:-} =~ ^[123]$ ]] || die "node id must be 1, 2 or 3 (got '${1:-}')"
}

cmd_kill() {
	check_id "${1:-}"
	local node="node$1" pid
	if ! node_running "$node"; then
		log "$node is not running"
		return 0
	fi
	pid="$(node_pid "$node")"
	kill -KILL "$pid"
	wait_gone 30 "$pid"
	log "killed $node (pid $pid)"
}

cmd_start() {
	check_id "${1:-}"
	local node="node$1" id brokers expect=0 t0=$SECONDS
	[[ -f $(node_dir "$node")/data/meta.properties ]] ||
		die "$node has no data dir; start the cluster with '$0 cluster-up' first"
	prepare
	brokers="127.0.0.1:$(broker_port "$node")"
	node_running "$node" || launch_node "$node"
	for id in "${CLUSTER_IDS[@]}"; do
		node_running "node$id" && expect=$((expect + 1))
	done
	if ((expect == ${#CLUSTER_IDS[@]})); then
		wait_ready "$node" "$brokers" "$expect" -full-isr
	else
		wait_ready "$node" "$brokers" "$expect"
	fi
	log "$node up at $brokers ($expect of ${#CLUSTER_IDS[@]} nodes running) in $((SECONDS - t0))s"
}

cmd_status() {
	local n
	for n in single node1 node2 node3; do
		if node_running "$n"; then
			echo "$n: running, pid $(node_pid "$n"), broker 127.0.0.1:$(broker_port "$n")"
		elif [[ -d $(node_dir "$n") ]]; then
			echo "$n: stopped (data in $(node_dir "$n"))"
		else
			echo "$n: absent"
		fi
	done
}

main() {
	local cmd=${1:-}
	shift || true
	case "$cmd" in
	up) cmd_up ;;
	cluster-up) cmd_cluster_up ;;
	down) cmd_down "$@" ;;
	kill) cmd_kill "$@" ;;
	start) cmd_start "$@" ;;
	status) cmd_status ;;
	fetch) ensure_tools && with_lock fetch_jars_locked ;;
	tools-fetch) ensure_tools && with_lock fetch_tools_locked && echo "$TOOLS_LIBS" ;;
	*)
		sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
		exit 2
		;;
	esac
}

main "$@"
