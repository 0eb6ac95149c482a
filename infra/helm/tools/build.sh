#!/usr/bin/env bash
# Build the tools the Helm chart's tests run: helm v4 and manifestcheck (a strict decoder of rendered
# manifests with the Kubernetes and KEDA Go types). Both come from the Go module proxy alone, pinned
# with every dependency by their go.mod and go.sum, like infra/schema-registry/build.sh. They are two
# modules so that helm is built with exactly the dependency versions of its own release, whatever
# KEDA's API module asks for.
set -euo pipefail
cd "$(dirname "$0")"
export PATH="$PATH:/usr/local/go/bin"
if ! command -v go >/dev/null; then
  echo "Go (1.26 or newer) is needed to build helm and manifestcheck: install it from https://go.dev/dl" >&2
  exit 1
fi
export GOPROXY="${GOPROXY:-https://proxy.golang.org}" GOFLAGS=-mod=readonly
mkdir -p bin
# `helm version` reads its version from a linker flag (helm's own Makefile sets it the same way).
helm_version=$(cd helm && go list -m -f '{{.Version}}' helm.sh/helm/v4)
(cd helm && go build -trimpath -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=${helm_version}" \
  -o ../bin/helm helm.sh/helm/v4/cmd/helm)
# manifestcheck reads the names KEDA's kafka scaler accepts from KEDA's source in the module cache.
keda_dir=$(cd manifestcheck && go mod download github.com/kedacore/keda/v2 && go list -m -f '{{.Dir}}' github.com/kedacore/keda/v2)
(cd manifestcheck && go build -trimpath -ldflags "-X main.kedaSource=${keda_dir}" -o ../bin/manifestcheck .)
echo "built $(pwd)/bin/helm (${helm_version}) and $(pwd)/bin/manifestcheck"
