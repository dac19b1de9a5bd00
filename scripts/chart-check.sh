#!/usr/bin/env bash
# Checks the Kubernetes packaging: the Helm chart, the dev-loop manifests and the Tiltfile.
# .ci/run calls it; it needs python3 (with venv and pip) and, for the flag check, cargo.
#
#   1. tools: helm and kubectl (scripts/helm-tools.sh), kubernetes-validate and starlark-pyo3 in a
#      venv under .tmp (pinned versions)
#   2. helm lint --strict, with the default values and with every file of helm/tassis/ci/ and
#      k8s/tassis-values.yaml
#   3. helm template with the same values sets (and a non-default namespace); renders that must
#      fail (schema violations, impossible settings) fail with their message
#   4. every rendered manifest and every k8s/ manifest validated against the Kubernetes 1.35 JSON
#      schemas, strict (unknown fields and unknown kinds fail)
#   5. the chart's promises on every render: probes, security context, drain timing, the gateways'
#      upstream addresses and discovery, RBAC, NetworkPolicies, selectors; federation: keystore and
#      messaging agree, the federation Service and Ingress lead to messaging's federation port
#   6. every TASSIS_* variable the chart sets is a flag of its role (`tassis <role> --help`; the
#      binary is built unless CHART_CHECK_BIN names one, or CHART_CHECK_BIN=skip)
#   7. helm/tassis/README.md lists every value
#   8. the Tiltfile, evaluated (both image modes) against stand-ins of Tilt's API: files it names
#      exist, resources and dependencies exist, the image it builds is the one the chart runs
#   9. the Dockerfile's stages (no Docker engine here), and that .dockerignore keeps in the build
#      context everything the workspace build reads
set -Eeuo pipefail
cd "$(dirname "$0")/.."

KUBERNETES_VALIDATE_VERSION=1.37.0   # bundles the schemas of 1.35 (and older, and newer)
STARLARK_PYO3_VERSION=2026.1.3       # starlark-rust: parses and evaluates the Tiltfile

log() { echo "chart-check: $*" >&2; }

# --- 1. tools ------------------------------------------------------------------------------------
bin_dir=$(scripts/helm-tools.sh)
export PATH="$bin_dir:$PATH"
helm_bin="$bin_dir/helm"

venv=.tmp/venv-chart-check
reqs="kubernetes-validate==$KUBERNETES_VALIDATE_VERSION starlark-pyo3==$STARLARK_PYO3_VERSION"
if [[ ! -x "$venv/bin/python" || "$(cat "$venv/.requirements" 2>/dev/null)" != "$reqs" ]]; then
  log "creating $venv ($reqs)"
  rm -rf "$venv"
  python3 -m venv "$venv"
  # shellcheck disable=SC2086
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check $reqs
  echo "$reqs" > "$venv/.requirements"
fi
py="$venv/bin/python"
log "$("$helm_bin" version --template 'helm {{.Version}}'), $(kubectl version --client 2>/dev/null | head -n1), kubernetes-validate $("$py" -m kubernetes_validate --version), starlark-pyo3 $STARLARK_PYO3_VERSION"

out=.tmp/chart-check
rm -rf "$out"
mkdir -p "$out"

# Value sets: name=values-file ("" for the chart's defaults).
sets=("default=")
for f in helm/tassis/ci/*-values.yaml; do
  sets+=("$(basename "$f" -values.yaml)=$f")
done
sets+=("dev=k8s/tassis-values.yaml")

# --- 2. lint ---------------------------------------------------------------------------------------
for s in "${sets[@]}"; do
  name=${s%%=*} file=${s#*=}
  args=()
  [[ -n "$file" ]] && args=(--values "$file")
  log "helm lint --strict ($name)"
  "$helm_bin" lint --strict --quiet helm/tassis "${args[@]}"
done

# --- 3. template -----------------------------------------------------------------------------------
rendered=()
for s in "${sets[@]}"; do
  name=${s%%=*} file=${s#*=}
  args=()
  [[ -n "$file" ]] && args=(--values "$file")
  "$helm_bin" template tassis helm/tassis --namespace tassis "${args[@]}" > "$out/$name.yaml"
  log "helm template ($name): $(grep -c '^kind:' "$out/$name.yaml") objects"
  rendered+=("$name=$out/$name.yaml")
done
# NOTES.txt renders too (helm template skips it; a client-side dry-run install does not).
for s in "${sets[@]}"; do
  name=${s%%=*} file=${s#*=}
  args=()
  [[ -n "$file" ]] && args=(--values "$file")
  if ! "$helm_bin" install tassis helm/tassis --dry-run=client --namespace tassis "${args[@]}" | grep -q '^NOTES:'; then
    log "FAIL: helm install --dry-run=client ($name) shows no NOTES"
    exit 1
  fi
done
log "NOTES.txt renders with every value set"
# Another release name and namespace: names derive from them, nothing is hard-wired.
"$helm_bin" template chat-prod helm/tassis --namespace messaging-prod > "$out/other-release.yaml"
rendered+=("other-release=$out/other-release.yaml")

# Renders that must be refused, with the message a user would see.
refused=0
must_fail() {
  local want=$1; shift
  local err
  refused=$((refused + 1))
  if err=$("$helm_bin" template tassis helm/tassis "$@" 2>&1 >/dev/null); then
    log "FAIL: helm template $* rendered; expected an error mentioning: $want"
    exit 1
  fi
  if ! grep -qF -- "$want" <<<"$err"; then
    log "FAIL: helm template $* failed without mentioning '$want':"
    echo "$err" >&2
    exit 1
  fi
}
must_fail "additional properties 'replica' not allowed" --set gateway.replica=3
must_fail "value must be one of 'json', 'plain'" --set logFormat=xml
must_fail "more than one replica needs Redis" --set messaging.replicas=2
must_fail "s3.bucket needs publicUrl" --set s3.bucket=b
must_fail "gateway.autoscaling needs a metric" --set gateway.autoscaling.targetCPUUtilizationPercentage=null
must_fail "must cover preStopSleepSeconds + shutdownGraceSeconds" --set drain.terminationGracePeriodSeconds=10
# Federation: a complete setup but for the one value each case breaks.
fed=(--set federation.enabled=true --set redis.url=redis-cluster://redis:6379 --set federation.publicAddr=eu.chat.example
     --set federation.presenceRedis.url=redis://presence:6379 --set federation.signingKey.existingSecret=tassis-federation)
peer=(--set 'federation.peers[0].name=us.chat.example' --set 'federation.peers[0].url=https://federation.us.chat.example:443'
      --set 'federation.peers[0].publicKey=d993e2edbda7af0fc33a42486913da2e4d269f526b1cceb09e5000bdf46e4ac4')
must_fail "at '/federation/peers': minItems: got 0, want 1" "${fed[@]}"
must_fail "at '/federation/peers/0/publicKey': 'ABC' does not match pattern" "${fed[@]}" "${peer[@]}" --set 'federation.peers[0].publicKey=ABC'
must_fail "at '/federation/signingKey': 'anyOf' failed" "${fed[@]}" "${peer[@]}" --set federation.signingKey.existingSecret=
must_fail "federation needs redis.url" "${fed[@]}" "${peer[@]}" --set redis.url=
must_fail "federation.peers lists this deployment itself" "${fed[@]}" "${peer[@]}" --set 'federation.peers[0].name=eu.chat.example'
log "$refused invalid value sets refused with their message"

# --- 4. Kubernetes schemas ------------------------------------------------------------------------
files=()
for r in "${rendered[@]}"; do files+=("${r#*=}"); done
k8s_manifests=()
for f in k8s/*.yaml; do
  [[ "$f" == k8s/tassis-values.yaml ]] || k8s_manifests+=("$f")
done
"$py" scripts/chart-check.py validate "${files[@]}" "${k8s_manifests[@]}"

# --- 5. chart invariants ---------------------------------------------------------------------------
"$py" scripts/chart-check.py invariants "${rendered[@]}"

# --- 6. flags --------------------------------------------------------------------------------------
tassis_bin=${CHART_CHECK_BIN:-}
if [[ -z "$tassis_bin" ]]; then
  log "cargo build -p tassis (for the flag check)"
  cargo build --quiet -p tassis
  # Wherever cargo puts it (CARGO_TARGET_DIR, .cargo/config).
  target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  tassis_bin="$target_dir/debug/tassis"
fi
if [[ "$tassis_bin" == skip ]]; then
  log "flag check skipped (CHART_CHECK_BIN=skip)"
else
  "$py" scripts/chart-check.py flags "$tassis_bin" "${files[@]}"
fi

# --- 7. chart README -------------------------------------------------------------------------------
"$py" scripts/chart-check.py readme

# --- 8. Tiltfile -----------------------------------------------------------------------------------
"$py" scripts/chart-check.py tiltfile "$helm_bin"

# --- 9. Dockerfile and build context -------------------------------------------------------------
"$py" scripts/chart-check.py dockerfile

log "all checks passed"
