#!/usr/bin/env bash
# `make image-test`: the image `make image` built, run with buildah (chroot isolation, so the
# container shares the host's network: the machine's PostgreSQL and a feed simulator started here
# are on 127.0.0.1). Exits non-zero at the first thing that is not as it should be.
#
#   1. the image's user is 10001:10001 and `ingest --help` runs through its ENTRYPOINT;
#   2. in a scratch database (created here, dropped at the end): `ingest check` says the schema
#      is missing, `ingest migrate` applies it, then `ingest check` is ok;
#   3. `ingest run --until-finished --speed fast FIXTURE_ID` in the image, against the simulator
#      (`ingest feed serve` from .venv, serving a match `ingest feed generate` wrote), with the
#      token in a mounted file as in production; then the rows stored equal the stream: as many
#      `actions` rows as packets in the recording, max(seq) = the last fixtureSeqNum, `ingest
#      verify` clean, and the run's metrics file counts the same packets.
#
# Settings (environment): IMAGE, STORAGE_DRIVER (vfs), BUILDAH_ISOLATION (chroot),
# IMAGE_TEST_SERVER (postgresql://postgres@127.0.0.1:5432: the server; `test` is the database
# connected to for CREATE/DROP DATABASE).
set -euo pipefail
cd "$(dirname "$0")/../.."

VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -n 1)
IMAGE=${IMAGE:-localhost/snooker-ingest:$VERSION}
STORAGE_DRIVER=${STORAGE_DRIVER:-vfs}
ISOLATION=${BUILDAH_ISOLATION:-chroot}
SERVER=${IMAGE_TEST_SERVER:-postgresql://postgres@127.0.0.1:5432}
HOST_INGEST=.venv/bin/ingest
buildah=(buildah --storage-driver "$STORAGE_DRIVER")

[ -x "$HOST_INGEST" ] || { echo "image-test: $HOST_INGEST missing (make .venv/.installed)" >&2; exit 1; }
command -v psql >/dev/null || { echo "image-test: psql is not installed" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/snooker-ingest-image-test.XXXXXX")
container='' database='' sim_pid='' drain_pid=''
cleanup() {
    [ -z "$sim_pid" ] || kill "$sim_pid" 2>/dev/null || true
    [ -z "$drain_pid" ] || wait "$drain_pid" 2>/dev/null || true
    [ -z "$container" ] || "${buildah[@]}" rm "$container" >/dev/null 2>&1 || true
    [ -z "$database" ] || psql -qX "$SERVER/test" -c "DROP DATABASE IF EXISTS \"$database\" WITH (FORCE)" || true
    rm -rf "$work"
}
trap cleanup EXIT

fail() { echo "image-test: FAILED: $*" >&2; exit 1; }
step() { echo "image-test: $*"; }
# the image's command in the working container: ENTRYPOINT + arguments, as `docker run IMAGE ARGS`
in_image() {
    local opts=()
    while [ "$1" != "--" ]; do opts+=("$1"); shift; done
    shift
    timeout 300 "${buildah[@]}" run --isolation "$ISOLATION" "${opts[@]}" "$container" -- "${entrypoint[@]}" "$@"
}
started=$(date +%s)

# 1. user and entrypoint -------------------------------------------------------------------------
"${buildah[@]}" inspect --type image "$IMAGE" >/dev/null 2>&1 || fail "no image $IMAGE (make image)"
container=$("${buildah[@]}" from --pull=never --quiet "$IMAGE")
"${buildah[@]}" inspect "$container" > "$work/inspect.json"
image_config() {  # a field of the image's (Docker-format) config, one line per list item
    python3 -c 'import json, sys
v = json.load(open(sys.argv[1]))["Docker"]["config"].get(sys.argv[2])
print(*(v if isinstance(v, list) else [v]), sep="\n")' "$work/inspect.json" "$1"
}
mapfile -t entrypoint < <(image_config Entrypoint)
user=$(image_config User)
[ "${entrypoint[*]}" = ingest ] || fail "ENTRYPOINT is ${entrypoint[*]}, not ingest"
[ "$user" = 10001:10001 ] || fail "the image's user is '$user', not 10001:10001"
# shellcheck disable=SC2016  # expanded in the container, not here
ids=$(timeout 60 "${buildah[@]}" run --isolation "$ISOLATION" "$container" -- sh -c 'echo "$(id -u):$(id -g)"')
[ "$ids" = 10001:10001 ] || fail "commands in the image run as $ids, not 10001:10001"
in_image -- --help > "$work/help.txt" || fail "ingest --help: exit $?"
grep -qi '^usage: ingest' "$work/help.txt" || fail "ingest --help printed no usage: $(head -3 "$work/help.txt")"
step "ok: runs as uid:gid $ids; ingest --help (entrypoint ${entrypoint[*]})"

# 2. migrate and check in a scratch database -------------------------------------------------------
scratch="ingest_image_test_$$"
psql -qX "$SERVER/test" -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$scratch\"" || fail "cannot create a database on $SERVER"
database=$scratch  # dropped at exit from here on
db_env=(--env "INGEST_DATABASE_URL=$SERVER/$database")
if in_image "${db_env[@]}" -- check > "$work/check0.txt" 2>&1; then
    fail "ingest check said ok before the schema was applied: $(cat "$work/check0.txt")"
fi
in_image "${db_env[@]}" -- migrate > "$work/migrate.txt" 2>&1 || fail "ingest migrate: $(tail -5 "$work/migrate.txt")"
in_image "${db_env[@]}" -- check > "$work/check.txt" 2>&1 || fail "ingest check after migrate: $(cat "$work/check.txt")"
[ "$(cat "$work/check.txt")" = ok ] || fail "ingest check printed: $(cat "$work/check.txt")"
step "ok: check refuses an empty database; migrate; check says ok ($SERVER/$database)"

# 3. a match streamed from the simulator on the host into the database, by the image ---------------
"$HOST_INGEST" feed generate --seed 24 --best-of 5 --output "$work/match.jsonl" 2> "$work/generate.log" \
    || fail "ingest feed generate: $(cat "$work/generate.log")"
read -r fixture packets last_seq < <(python3 - "$work/match.jsonl" <<'PY'
import json, sys
packets = [json.loads(line) for line in open(sys.argv[1], encoding="utf-8") if line.strip()]
actions = [p["fixtureAction"] for p in packets if isinstance(p, dict) and "fixtureAction" in p]
assert len(actions) == len(packets), "the generated recording holds only action packets"
print(actions[0]["fixtureId"], len(actions), max(a["fixtureSeqNum"] for a in actions))
PY
)
mkfifo "$work/sim.err"
INGEST_TOKEN=dev "$HOST_INGEST" feed serve --host 127.0.0.1 --port 0 --heartbeat-interval 1 \
    --recording "$work/match.jsonl" > "$work/sim.log" 2> "$work/sim.err" &
sim_pid=$!
exec 3< "$work/sim.err"
feed=
while IFS= read -r -t 60 line <&3; do  # the simulator says where it listens, then we go on
    echo "$line" >> "$work/sim.log"
    if [[ $line =~ listening\ on\ (ws://127\.0\.0\.1:[0-9]+) ]]; then feed=${BASH_REMATCH[1]}; break; fi
done
cat <&3 >> "$work/sim.log" &  # keep reading what it logs, so that it never blocks on the pipe
drain_pid=$!
exec 3<&-
[ -n "$feed" ] || fail "the simulator did not start: $(cat "$work/sim.log")"

printf dev > "$work/token"
chown 10001:10001 "$work/token" && chmod 0400 "$work/token"  # as deploy/README.md says
mkdir "$work/out" && chown 10001:10001 "$work/out"
# the image serves metrics on 0.0.0.0:9108, which is the host's own with chroot isolation: a free
# port on loopback instead
metrics_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
run_started=$(date +%s)
in_image "${db_env[@]}" --env "INGEST_FEED_URL=$feed" \
    --env INGEST_TOKEN_FILE=/run/secrets/ingest-token \
    --volume "$work/token:/run/secrets/ingest-token:ro" \
    --env INGEST_METRICS_HOST=127.0.0.1 --env "INGEST_METRICS_PORT=$metrics_port" \
    --env INGEST_METRICS_FILE=/tmp/out/ingest.prom \
    --volume "$work/out:/tmp/out" \
    -- run --until-finished --speed fast "$fixture" > "$work/run.log" 2>&1 \
    || fail "ingest run in the image: exit $?: $(tail -20 "$work/run.log")"
run_seconds=$(( $(date +%s) - run_started ))

counts=$(psql -qXAt -F ' ' "$SERVER/$database" -v ON_ERROR_STOP=1 \
    -c "SELECT count(*), coalesce(max(seq), 0) FROM actions WHERE fixture_id = '$fixture'") \
    || fail "cannot read the actions table of $database"
read -r rows max_seq <<< "$counts"
[ "$rows" = "$packets" ] || fail "$rows actions rows stored for $fixture, the recording has $packets packets"
[ "$max_seq" = "$last_seq" ] || fail "max(seq) stored is $max_seq, the recording's last fixtureSeqNum is $last_seq"
stored=$(sed -n 's/^ingest_packets_stored_total \([0-9.e+]*\)$/\1/p' "$work/out/ingest.prom")
if [ -z "$stored" ] || ! python3 -c 'import sys; sys.exit(float(sys.argv[1]) != int(sys.argv[2]))' "$stored" "$rows"; then
    fail "the run's metrics file says ingest_packets_stored_total ${stored:-(missing)}, $rows rows stored"
fi
in_image "${db_env[@]}" -- verify "$fixture" > "$work/verify.txt" 2>&1 \
    || fail "ingest verify $fixture: $(tail -20 "$work/verify.txt")"
step "ok: ingest run in the image stored $rows rows = $packets packets, max(seq) $max_seq = $last_seq, metrics count $stored, verify clean (run ${run_seconds} s, feed $feed)"
step "passed in $(( $(date +%s) - started )) s"
