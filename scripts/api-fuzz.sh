#!/usr/bin/env bash
# Fuzzes the HTTP API from its own OpenAPI document with schemathesis (from PyPI): builds the
# engine, starts it on a fresh SQLite database with an admin, a customer, a driver and a job, and
# runs schemathesis as each of them and without a token. Fails on any 5xx and on any response
# that breaks the document (status, content type or body schema).
#
#   bash scripts/api-fuzz.sh                 # 50 examples per operation and caller
#   API_FUZZ_EXAMPLES=500 API_FUZZ_SEED=7 bash scripts/api-fuzz.sh
#   API_FUZZ_ENGINE=target/debug/umuve-dispatch bash scripts/api-fuzz.sh   # skip the build
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
examples=${API_FUZZ_EXAMPLES:-50}
seed=${API_FUZZ_SEED:-1}
work=target/api-fuzz
mkdir -p "$work"

if ! "$work/venv/bin/st" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
    echo "api-fuzz: installing schemathesis $SCHEMATHESIS_VERSION"
    python3 -m venv "$work/venv"
    "$work/venv/bin/pip" install --quiet "schemathesis==$SCHEMATHESIS_VERSION"
fi
schemathesis=$PWD/$work/venv/bin/st
# API_FUZZ_ENGINE: a binary built already (CI passes the one `cargo test` just built).
engine=${API_FUZZ_ENGINE:-}
if [ -z "$engine" ]; then
    cargo build --quiet --bin umuve-dispatch
    engine=target/debug/umuve-dispatch
fi

run_dir=$(mktemp -d "$PWD/$work/run.XXXXXX")
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base=http://127.0.0.1:$port
export APP_ENV=development
export DATABASE_URL="sqlite://$run_dir/umuve.db"
export UPLOAD_DIR="$run_dir/uploads"
export PORT=$port
export JWT_SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
export SECRET_KEY=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
# The fuzzer sends thousands of requests from one address and one account per role.
export AUTH_PER_IP_PER_MINUTE=1000000 SMS_PER_IP_PER_HOUR=1000000 SMS_PER_PHONE_PER_HOUR=1000000
export SMS_GLOBAL_PER_HOUR=1000000 JOBS_PER_USER_PER_HOUR=1000000 UPLOADS_PER_USER_PER_HOUR=1000000
export WS_CONNECTS_PER_USER_PER_MINUTE=1000000
export RUST_LOG=${RUST_LOG:-warn}

password=$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))')
"$engine" create-admin --email fuzz-admin@goumuve.test --password "$password" >/dev/null
"$engine" >"$run_dir/engine.log" 2>&1 &
engine_pid=$!
trap 'kill $engine_pid 2>/dev/null; wait $engine_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
    curl -fs "$base/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fs "$base/healthz" >/dev/null || { echo "api-fuzz: the engine did not start" >&2; cat "$run_dir/engine.log" >&2; exit 1; }

json() { python3 -c "import json, sys; print(json.load(sys.stdin)$1)"; }
post() { # post <path> <token|-> <json>
    local auth=()
    [ "$2" != "-" ] && auth=(-H "Authorization: Bearer $2")
    curl -fsS -X POST "${auth[@]}" -H 'Content-Type: application/json' -d "$3" "$base$1"
}
login() { post /api/auth/login - "{\"email\": \"$1\", \"password\": \"$password\"}" | json '["token"]'; }

admin=$(login fuzz-admin@goumuve.test)
post /api/admin/users "$admin" "{\"role\": \"customer\", \"email\": \"fuzz-customer@goumuve.test\", \"password\": \"$password\"}" >/dev/null
driver_id=$(post /api/admin/users "$admin" "{\"role\": \"driver\", \"email\": \"fuzz-driver@goumuve.test\", \"password\": \"$password\", \"approved\": true}" | json '["id"]')
customer=$(login fuzz-customer@goumuve.test)
driver=$(login fuzz-driver@goumuve.test)
job_id=$(post /api/jobs "$customer" '{"address": "1 Flagler St", "lat": 25.7743, "lng": -80.1937, "description": "sofa", "load_size": "half"}' | json '["id"]')

# Operations reach real cases: the customer's job for /api/jobs/{id}…, a point in the service
# area for bookings, the driver for approval. Payments, Apple sign-in and Stripe webhooks are not
# configured here: their documented 503 `unavailable` is the expected answer.
config="$run_dir/schemathesis.toml"
cat >"$config" <<TOML
[[operations]]
include-path-regex = "^/api/jobs/\\\\{id\\\\}"
parameters = { "id" = "$job_id" }

[[operations]]
include-path = "/api/jobs"
include-method = "POST"
parameters = { "body.lat" = 25.7743, "body.lng" = -80.1937 }

[[operations]]
include-path = "/api/admin/drivers/{id}/approve"
parameters = { "id" = "$driver_id" }

[[operations]]
include-path-regex = "^/api/(auth/apple|webhooks/stripe|jobs/\\\\{id\\\\}/payment-intent|drivers/me/connect-account)\$"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "503"]
TOML

checks=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
failed=()
for caller in anonymous admin customer driver; do
    headers=()
    case $caller in
        admin) headers=(-H "Authorization: Bearer $admin") ;;
        customer) headers=(-H "Authorization: Bearer $customer") ;;
        driver) headers=(-H "Authorization: Bearer $driver") ;;
    esac
    echo "=== api-fuzz as $caller"
    # From the run's directory: schemathesis keeps its example database in the working one.
    if ! (cd "$run_dir" && "$schemathesis" --config-file "$config" run "$base/api/openapi.json" \
        "${headers[@]}" --checks "$checks" --max-examples "$examples" --seed "$seed" \
        --workers 1 --no-color --report junit --report-dir "$run_dir/report-$caller"); then
        failed+=("$caller")
    fi
done

if grep -q "panicked" "$run_dir/engine.log"; then
    echo "api-fuzz: the engine panicked (see $run_dir/engine.log)" >&2
    failed+=(panic)
fi
if [ ${#failed[@]} -gt 0 ]; then
    echo "api-fuzz: failures as: ${failed[*]} (reports in $run_dir)" >&2
    exit 1
fi
echo "api-fuzz: no 5xx and no response outside the document"
rm -rf "$run_dir"
