#!/usr/bin/env bash
# End-to-end check of the CPU image with podman: build it around a host binary, serve a bundle,
# probe health, classify, scrape metrics, hot-reload a mounted models directory, and stop it with
# SIGTERM.
#
# Needs no registry: the Debian base comes from debootstrap (built once, then cached) and is
# tagged as debian:bookworm-slim, and the binary is built on the host (BUILD_FROM=prebuilt).
# Podman keeps its images and containers in a private temporary store removed on exit.
#
# Environment:
#   TANDEM_BIN           binary to put in the image; default ${CARGO_TARGET_DIR:-target}/release/tandem,
#                        rebuilt with cargo when missing or older than the sources
#   TANDEM_SMOKE_CACHE   where the base root filesystem is kept between runs;
#                        default ${XDG_CACHE_HOME:-$HOME/.cache}/tandem-smoke
#   TANDEM_SMOKE_MIRROR  Debian mirror for debootstrap; default the host's first apt source
#   TANDEM_SMOKE_KEEP=1  keep the work directory (logs, build context) for inspection
#
# Runs as root (podman, apt and debootstrap need it) and re-executes itself under sudo otherwise.
set -euo pipefail

if [[ $(id -u) != 0 ]]; then
    command -v sudo >/dev/null || { echo "[smoke] FAIL: needs root or sudo" >&2; exit 1; }
    exec sudo --preserve-env bash "$0" "$@"
fi

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

started=$SECONDS
say() { printf '[smoke %4ss] %s\n' "$((SECONDS - started))" "$*"; }
fail() {
    printf '[smoke] FAIL: %s\n' "$*" >&2
    exit 1
}

# Bounds on every wait, in seconds.
readonly READY_TIMEOUT=60 BUILD_TIMEOUT=900 REQUEST_TIMEOUT=10 STOP_GRACE=20

# --- prerequisites -----------------------------------------------------------------------------

missing=()
for program in podman runc debootstrap curl python3; do
    command -v "$program" >/dev/null || missing+=("$program")
done
if ((${#missing[@]} > 0)); then
    say "installing ${missing[*]} with apt"
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 apt-get update -qq || fail "apt-get update failed"
    timeout 900 apt-get install -y -qq "${missing[@]}" >/dev/null ||
        fail "apt-get install ${missing[*]} failed"
fi

# --- private podman configuration --------------------------------------------------------------

work=$(mktemp -d "${TMPDIR:-/tmp}/tandem-smoke.XXXXXX")
container=""
cleanup() {
    local rc=$?
    if [[ -n $container ]]; then
        if ((rc != 0)); then
            echo "[smoke] last container logs:" >&2
            podman logs --tail 40 "$container" >&2 2>&1 || true
        fi
        podman rm -f -t 0 "$container" >/dev/null 2>&1 || true
    fi
    # The store is private to this run, so removing every image touches nothing else.
    podman rmi -a -f >/dev/null 2>&1 || true
    if [[ ${TANDEM_SMOKE_KEEP:-0} == 1 ]]; then
        echo "[smoke] kept $work" >&2
    else
        rm -rf "$work" 2>/dev/null || echo "[smoke] could not remove all of $work" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Without CAP_SYS_RESOURCE crun cannot raise RLIMIT_NOFILE, and it refuses hybrid cgroups; runc
# with fixed ulimits and cgroupfs works in unprivileged CI containers.
cat >"$work/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$work/tmp"
EOF
cat >"$work/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$work/storage"
runroot = "$work/run"
EOF
mkdir -p "$work/tmp"
export CONTAINERS_CONF=$work/containers.conf CONTAINERS_STORAGE_CONF=$work/storage.conf

# --- base image --------------------------------------------------------------------------------

# Prints the host's first apt source with the `main` component at a path ending in /debian, in
# deb822 or one-line format; security and third-party repositories fail one test or the other.
apt_mirror() {
    local files=() file
    for file in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f $file ]] && files+=("$file")
    done
    ((${#files[@]} > 0)) || return 0
    awk '
        function pick(list, components,    n, i, u) {
            if (components !~ /(^| )main( |$)/) return
            n = split(list, u, " ")
            for (i = 1; i <= n; i++) if (u[i] ~ /^(https?|file):.*\/debian\/?$/) { print u[i]; found = 1; exit }
        }
        /^[ \t]*$/ { pick(uris, components); uris = ""; components = ""; next }
        /^URIs:/ { sub(/^URIs:[ \t]*/, ""); uris = $0; next }
        /^Components:/ { sub(/^Components:[ \t]*/, ""); components = $0; next }
        $1 == "deb" {
            for (i = 2; i <= NF && $i !~ /^(https?|file):/; i++) {}
            line = ""
            for (j = i + 2; j <= NF; j++) line = line " " $j
            pick($i, line)
        }
        END { if (!found) pick(uris, components) }' "${files[@]}"
}

cache=${TANDEM_SMOKE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tandem-smoke}
base_tar=$cache/debian-bookworm-minbase.tar
if [[ ! -s $base_tar ]]; then
    mirror=${TANDEM_SMOKE_MIRROR:-$(apt_mirror)}
    [[ -n $mirror ]] || fail "no Debian mirror in the apt sources; set TANDEM_SMOKE_MIRROR"
    say "building the bookworm base with debootstrap from $mirror (once; cached in $cache)"
    mkdir -p "$cache"
    if ! timeout "$BUILD_TIMEOUT" debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" \
        >"$work/debootstrap.log" 2>&1; then
        tail -n 20 "$work/debootstrap.log" >&2
        fail "debootstrap failed (full log above when kept with TANDEM_SMOKE_KEEP=1)"
    fi
    rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
    tar -C "$work/rootfs" -cf "$base_tar.partial" . || fail "cannot write $base_tar"
    mv "$base_tar.partial" "$base_tar"
    rm -rf "$work/rootfs"
else
    say "reusing the cached bookworm base $base_tar"
fi
podman import -q "$base_tar" localhost/tandem-smoke-base:bookworm >/dev/null ||
    fail "podman import of the base failed"
# The Dockerfile's short name `debian:bookworm-slim` now resolves to this local image (podman
# stores it as localhost/debian), and --pull=never keeps the build from looking further.
podman tag localhost/tandem-smoke-base:bookworm debian:bookworm-slim

# --- binary and bundle -------------------------------------------------------------------------

if [[ -n ${TANDEM_BIN:-} ]]; then
    bin=$TANDEM_BIN
    [[ -x $bin ]] || fail "TANDEM_BIN=$bin is not an executable file"
else
    bin=${CARGO_TARGET_DIR:-target}/release/tandem
    if [[ ! -x $bin ]] || [[ -n $(find Cargo.toml Cargo.lock src runtime server training \
        -newer "$bin" -type f -print -quit) ]]; then
        say "building $bin (cargo build --release --locked --bin tandem)"
        cargo build --release --locked --bin tandem || fail "cargo build failed"
    fi
fi
say "binary: $bin"

# A private build context holds only what the Dockerfile copies, so the check never reads or
# writes the checkout's docker/prebuilt/ or models/ and never scans target/.
ctx=$work/context
mkdir -p "$ctx/models"
tar -C "$root" --exclude=docker/prebuilt -cf - docker | tar -C "$ctx" -xf -
mkdir -p "$ctx/docker/prebuilt"
cp "$bin" "$ctx/docker/prebuilt/tandem"
if [[ -d models ]]; then
    cp -R models/. "$ctx/models/"
fi
if [[ ! -f $ctx/models/digits-student/manifest.json ]]; then
    say "models/ has no digits-student bundle: training a tiny one for the image's default command"
    timeout 300 "$bin" train --dataset digits --arch tiny --epochs 2 --quiet \
        --out "$work/bundles/digits-student" >"$work/train.log" 2>&1 ||
        { cat "$work/train.log" >&2; fail "training the smoke bundle failed"; }
    cp -R "$work/bundles/digits-student" "$ctx/models/"
fi

# --- image -------------------------------------------------------------------------------------

image=localhost/tandem-smoke:$$
say "building the image (podman build --build-arg BUILD_FROM=prebuilt)"
# The docker format keeps HEALTHCHECK, which the OCI image format has no field for.
if ! timeout "$BUILD_TIMEOUT" podman build --pull=never --format docker \
    --build-arg BUILD_FROM=prebuilt -f "$ctx/docker/Dockerfile" -t "$image" "$ctx" \
    >"$work/build.log" 2>&1; then
    tail -n 40 "$work/build.log" >&2
    fail "podman build failed"
fi

user=$(podman image inspect -f '{{.Config.User}}' "$image")
[[ -n $user && $user != root && $user != 0* ]] || fail "image runs as '${user:-root}', want a non-root user"
health=$(podman image inspect -f '{{.HealthCheck}}' "$image" 2>/dev/null || true)
[[ $health == *tandem-healthcheck* ]] || fail "image has no HEALTHCHECK calling tandem-healthcheck (got '$health')"
# Podman logs errors about systemd healthcheck timers where systemd is absent; they go to
# $work/podman.log and are shown on failure only.
if ! version=$(timeout 60 podman run --rm "$image" --version 2>>"$work/podman.log"); then
    tail -n 5 "$work/podman.log" >&2
    fail "the binary does not start in the image (a host newer than bookworm links a newer glibc)"
fi
say "image ok: user $user, $version"

# --- serve -------------------------------------------------------------------------------------

container=tandem-smoke-$$
# Port 0 on the host: podman picks a free one, so parallel runs never collide. Read-only like
# docker/compose.yaml: serving must write nothing.
podman run -d --read-only --name "$container" -p 127.0.0.1::8080 "$image" \
    >/dev/null 2>>"$work/podman.log" ||
    { tail -n 5 "$work/podman.log" >&2; fail "podman run failed"; }
address=$(podman port "$container" 8080/tcp | head -n 1)
[[ $address == 127.0.0.1:* ]] || fail "unexpected port mapping '$address'"
url=http://$address

deadline=$((SECONDS + READY_TIMEOUT))
until curl -fsS -m 2 -o /dev/null "$url/health/ready" 2>/dev/null; do
    [[ $(podman inspect -f '{{.State.Running}}' "$container") == true ]] ||
        fail "the container exited before it was ready"
    ((SECONDS < deadline)) || fail "$url/health/ready did not answer 200 within ${READY_TIMEOUT}s"
    sleep 0.5
done
say "ready at $url"

timeout 30 podman healthcheck run "$container" >/dev/null 2>>"$work/podman.log" ||
    fail "the image's HEALTHCHECK reports unhealthy while /health/ready answers 200"
uid=$(timeout 30 podman exec "$container" id -u)
[[ $uid != 0 ]] || fail "the server runs as root"

# POSTs a body and leaves the JSON answer in $work/answer.json; prints the HTTP status.
post() {
    local content_type=$1 data=$2 path=$3
    curl -sS -m "$REQUEST_TIMEOUT" -o "$work/answer.json" -w '%{http_code}' \
        -H "content-type: $content_type" --data-binary "$data" "$url$path"
}

# An 8x8 grayscale PNG of a vertical stroke, and the same pixels as JSON, written with the
# standard library only.
python3 - "$work" <<'EOF'
import base64, json, struct, sys, zlib

work = sys.argv[1]
pixels = [[255 if 3 <= x <= 4 and 1 <= y <= 6 else 0 for x in range(8)] for y in range(8)]

def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

raw = b"".join(b"\x00" + bytes(row) for row in pixels)
png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 0, 0, 0, 0))
       + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
open(f"{work}/digit.png", "wb").write(png)
body = {"inputs": [{"image": base64.b64encode(png).decode()}, {"pixels": pixels}], "top_k": 10}
open(f"{work}/classify.json", "w").write(json.dumps(body))
EOF

# Checks $work/answer.json: `inputs` prediction lists of `top_k` digit labels, best first.
check_predictions() {
    python3 - "$work/answer.json" "$1" "$2" <<'EOF'
import json, math, sys

answer = json.load(open(sys.argv[1]))
inputs, top_k = int(sys.argv[2]), int(sys.argv[3])
assert answer["model"].startswith("digits-student"), f"model {answer['model']!r}"
predictions = answer["predictions"]
assert len(predictions) == inputs, f"{len(predictions)} prediction lists for {inputs} inputs"
for ranked in predictions:
    assert len(ranked) == top_k, f"{len(ranked)} predictions, want {top_k}"
    scores = [p["score"] for p in ranked]
    assert all(math.isfinite(s) and 0.0 <= s <= 1.0 for s in scores), f"scores {scores}"
    assert scores == sorted(scores, reverse=True), f"scores not best first: {scores}"
    assert {p["label"] for p in ranked} <= {str(d) for d in range(10)}, f"labels {ranked}"
EOF
}

status=$(post image/png "@$work/digit.png" "/v1/models/digits-student/classify?top_k=3")
[[ $status == 200 ]] || fail "raw PNG classify answered $status: $(cat "$work/answer.json")"
check_predictions 1 3 || fail "raw PNG classify answered an unexpected body: $(cat "$work/answer.json")"
status=$(post application/json "@$work/classify.json" /v1/models/digits-student/classify)
[[ $status == 200 ]] || fail "JSON classify answered $status: $(cat "$work/answer.json")"
check_predictions 2 10 || fail "JSON classify answered an unexpected body: $(cat "$work/answer.json")"
status=$(post application/json "@$work/classify.json" /v1/models/no-such-model/classify)
[[ $status == 404 ]] || fail "an unknown model answered $status, want 404"
grep -q '"error"' "$work/answer.json" || fail "the 404 lacks the error body: $(cat "$work/answer.json")"
say "classify ok (raw PNG, JSON batch of 2, unknown model 404)"

curl -fsS -m "$REQUEST_TIMEOUT" -o "$work/metrics.txt" "$url/metrics" || fail "GET /metrics failed"
grep -q '^tandem_model_requests_total{.*digits-student.*} [1-9]' "$work/metrics.txt" ||
    fail "/metrics has no tandem_model_requests_total sample for digits-student"
say "metrics ok"

# --- hot reload --------------------------------------------------------------------------------

# A second container serves a models directory mounted read-only from the host and watches it;
# the host changes the bundles under it while the container runs.
models_dir=$work/models-dir
mkdir -p "$models_dir"
cp -R "$ctx/models/digits-student" "$models_dir/"
chmod -R a+rX "$models_dir"
reloading=tandem-smoke-reload-$$
podman run -d --read-only --name "$reloading" -p 127.0.0.1::8080 -v "$models_dir:/srv/models:ro" \
    -e TANDEM_API_KEY=smoke "$image" serve --models-dir /srv/models --watch --watch-interval-ms 200 \
    >/dev/null 2>>"$work/podman.log" ||
    { tail -n 5 "$work/podman.log" >&2; fail "podman run of the models-directory container failed"; }
container_reload_cleanup() { podman rm -f -t 0 "$reloading" >/dev/null 2>&1 || true; }
# Keeps the exit status for `cleanup`, which reports and returns it.
trap 'rc=$?; container_reload_cleanup; (exit "$rc"); cleanup' EXIT
reload_url=http://$(podman port "$reloading" 8080/tcp | head -n 1)
deadline=$((SECONDS + READY_TIMEOUT))
until curl -fsS -m 2 -o /dev/null "$reload_url/health/ready" 2>/dev/null; do
    ((SECONDS < deadline)) || fail "the models-directory container was not ready within ${READY_TIMEOUT}s"
    sleep 0.5
done

# Calls the admin API or lists the models; leaves the JSON answer in $work/answer.json and prints
# the HTTP status.
admin() {
    local method=$1 path=$2
    curl -sS -m "$REQUEST_TIMEOUT" -o "$work/answer.json" -w '%{http_code}' -X "$method" \
        -H 'authorization: Bearer smoke' "$reload_url$path"
}
# Waits until `GET /v1/models` satisfies a Python expression over `models` (the list).
wait_models() {
    local what=$1 expr=$2
    deadline=$((SECONDS + READY_TIMEOUT))
    until [[ $(admin GET /v1/models) == 200 ]] && python3 -c "import json,sys; models=json.load(open(sys.argv[1]))['models']; sys.exit(0 if ($expr) else 1)" "$work/answer.json"; do
        ((SECONDS < deadline)) || fail "timed out waiting for $what: $(cat "$work/answer.json")"
        sleep 0.5
    done
}
classify_reloading() {
    curl -sS -m "$REQUEST_TIMEOUT" -o "$work/answer.json" -w '%{http_code}' -H 'authorization: Bearer smoke' \
        -H 'content-type: application/json' --data-binary "@$work/classify.json" \
        "$reload_url/v1/models/digits-student/classify"
}

wait_models "digits-student@1" "any(m['id'] == 'digits-student@1' and m['state'] == 'ready' for m in models)"
old_bundle=$(python3 -c "import json,sys; print([m['bundle_id'] for m in json.load(open(sys.argv[1]))['models']][0])" "$work/answer.json")

# A corrupt copy is refused on request, and the old version keeps answering.
cp "$models_dir/digits-student/model.safetensors" "$work/good.safetensors"
python3 - "$models_dir/digits-student/model.safetensors" <<'EOF2'
import sys
path = sys.argv[1]
data = bytearray(open(path, "rb").read())
data[-1] ^= 1
open(path, "wb").write(bytes(data))
EOF2
status=$(admin POST /v1/models/digits-student/reload)
[[ $status == 422 ]] || fail "reloading a corrupt bundle answered $status: $(cat "$work/answer.json")"
grep -q invalid_bundle "$work/answer.json" || fail "the refusal is not invalid_bundle: $(cat "$work/answer.json")"
status=$(classify_reloading)
[[ $status == 200 ]] || fail "classify after a refused reload answered $status: $(cat "$work/answer.json")"
say "corrupt bundle refused, the old version still serves"

# The good weights under a new version: the watcher swaps digits-student@1 for @2.
cp "$work/good.safetensors" "$models_dir/digits-student/model.safetensors"
python3 - "$models_dir/digits-student/manifest.json" <<'EOF2'
import json, sys
path = sys.argv[1]
manifest = json.load(open(path))
manifest["version"] = "2"
json.dump(manifest, open(path, "w"), indent=2)
EOF2
wait_models "the watcher to serve digits-student@2" \
    "[m['id'] for m in models] == ['digits-student@2'] and models[0]['state'] == 'ready' and models[0]['bundle_id'] != '$old_bundle'"
status=$(classify_reloading)
[[ $status == 200 ]] && grep -q '"model":"digits-student@2"' "$work/answer.json" ||
    fail "classify after the hot reload answered $status: $(cat "$work/answer.json")"
say "hot reload ok: the watcher swapped digits-student@1 for @2 in the running container"
container_reload_cleanup

# --- graceful stop -----------------------------------------------------------------------------

stop_started=$SECONDS
podman stop -t "$STOP_GRACE" "$container" >/dev/null 2>>"$work/podman.log" ||
    { tail -n 5 "$work/podman.log" >&2; fail "podman stop failed"; }
exit_code=$(podman inspect -f '{{.State.ExitCode}}' "$container")
if [[ $exit_code != 0 ]]; then
    fail "the server exited with $exit_code after SIGTERM (137 means podman had to SIGKILL it)"
fi
podman logs "$container" >"$work/server.log" 2>&1 || fail "podman logs failed"
grep -qi sigterm "$work/server.log" || fail "the logs do not show a SIGTERM shutdown"
say "stopped by SIGTERM in $((SECONDS - stop_started))s with exit code 0"

say "PASS"
