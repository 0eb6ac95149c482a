#!/usr/bin/env bash
# Build the schema registry the integration tests run against: AxonOps Schema Registry, a Go server
# of the Confluent Schema Registry REST API (Avro compatibility checks included). No Confluent
# registry installs here (Confluent's is on its own Maven repository, Karapace is not on PyPI); this
# one builds from the Go module proxy alone, pinned with every dependency by go.mod and go.sum.
set -euo pipefail
cd "$(dirname "$0")"
export PATH="$PATH:/usr/local/go/bin"
if ! command -v go >/dev/null; then
  echo "Go (1.26 or newer) is needed to build the test schema registry: install it from https://go.dev/dl" >&2
  exit 1
fi
export GOPROXY="${GOPROXY:-https://proxy.golang.org}" GOFLAGS=-mod=readonly
go build -o bin/schema-registry github.com/axonops/axonops-schema-registry/cmd/schema-registry
echo "built $(pwd)/bin/schema-registry"
