// Command manifestcheck strictly decodes rendered Kubernetes manifests with the official Go types.
//
// It reads YAML documents (from the files named, or stdin) and decodes each one into the type its
// apiVersion and kind name: client-go's scheme for Kubernetes' own kinds, KEDA's v1alpha1 API types
// for ScaledObject and TriggerAuthentication. Decoding is strict, so a field the type does not have
// (a typo, a field at the wrong level), a duplicate field or an unknown kind is an error, as the API
// server's strict field validation would report it. ScaledObjects also get the checks KEDA's
// admission webhook makes without a cluster (replica bounds, triggers, fallback), and the
// metadata keys of their kafka triggers are checked against the names KEDA's kafka scaler reads.
//
// It prints one line per object and exits 1 if any document fails.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"os"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"

	kedav1alpha1 "github.com/kedacore/keda/v2/apis/keda/v1alpha1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

func newDecoder() (runtime.Decoder, error) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := kedav1alpha1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	return serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer(), nil
}

// kedaSource is the KEDA module's directory in the module cache, set by build.sh (-ldflags -X).
var kedaSource string

// kafkaTriggerKeys reads the trigger metadata names KEDA's kafka scaler accepts from the pinned KEDA
// module's own source: the `keda:"name=…,order=…triggerMetadata…"` tags of its kafkaMetadata
// struct. A trigger's metadata is a map[string]string in KEDA's API types, so strict decoding cannot
// see a misspelt key, and KEDA would silently use the default in its place.
func kafkaTriggerKeys() (map[string]bool, error) {
	path := kedaSource + "/pkg/scalers/kafka_scaler.go"
	file, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
	if err != nil {
		return nil, fmt.Errorf("reading KEDA's kafka scaler (run infra/helm/tools/build.sh again): %w", err)
	}
	keys := map[string]bool{}
	ast.Inspect(file, func(node ast.Node) bool {
		spec, ok := node.(*ast.TypeSpec)
		if !ok || spec.Name.Name != "kafkaMetadata" {
			return true
		}
		for _, field := range spec.Type.(*ast.StructType).Fields.List {
			if field.Tag == nil {
				continue
			}
			raw, err := strconv.Unquote(field.Tag.Value)
			if err != nil {
				continue
			}
			var names []string
			inMetadata := false
			for _, part := range strings.Split(reflect.StructTag(raw).Get("keda"), ",") {
				key, value, _ := strings.Cut(part, "=")
				switch key {
				case "name":
					names = strings.Split(value, ";")
				case "order":
					inMetadata = slices.Contains(strings.Split(value, ";"), "triggerMetadata")
				}
			}
			for _, name := range names {
				keys[name] = keys[name] || inMetadata
			}
		}
		return false
	})
	if len(keys) == 0 {
		return nil, fmt.Errorf("no kafkaMetadata fields in %s: has KEDA's scaler changed?", path)
	}
	return keys, nil
}

// kedaChecks runs the validations KEDA's webhook applies that need no cluster.
func kedaChecks(obj runtime.Object) error {
	so, ok := obj.(*kedav1alpha1.ScaledObject)
	if !ok {
		return nil
	}
	errs := []error{
		kedav1alpha1.CheckReplicaCountBoundsAreValid(so),
		kedav1alpha1.ValidateTriggers(so.Spec.Triggers),
		kedav1alpha1.CheckFallbackValid(so),
	}
	for i, trigger := range so.Spec.Triggers {
		if trigger.Type != "kafka" {
			continue
		}
		keys, err := kafkaTriggerKeys()
		if err != nil {
			return err
		}
		var unknown []string
		for key := range trigger.Metadata {
			if !keys[key] {
				unknown = append(unknown, key)
			}
		}
		if len(unknown) > 0 {
			sort.Strings(unknown)
			errs = append(errs, fmt.Errorf("spec.triggers[%d]: KEDA's kafka scaler reads no trigger metadata %q", i, unknown))
		}
	}
	return errors.Join(errs...)
}

func check(decoder runtime.Decoder, doc []byte) (string, error) {
	// sigs.k8s.io/yaml's strict conversion rejects duplicate keys before the JSON decoder sees them.
	data, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return "", err
	}
	if bytes.Equal(bytes.TrimSpace(data), []byte("null")) {
		return "", nil // an empty document: helm leaves them where a template renders nothing
	}
	obj, gvk, err := decoder.Decode(data, nil, nil)
	if err != nil {
		return "", err
	}
	accessor, err := meta.Accessor(obj)
	if err != nil {
		return "", err
	}
	if accessor.GetName() == "" {
		return "", fmt.Errorf("%s has no metadata.name", gvk.Kind)
	}
	line := fmt.Sprintf("ok %s %s %s", gvk.GroupVersion(), gvk.Kind, accessor.GetName())
	return line, kedaChecks(obj)
}

func run(decoder runtime.Decoder, source string, in io.Reader, out io.Writer) (objects, failures int) {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(in))
	for index := 0; ; index++ {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return objects, failures
		}
		where := fmt.Sprintf("%s: document %d", source, index)
		if err != nil {
			fmt.Fprintf(out, "FAIL %s: %v\n", where, err)
			return objects, failures + 1
		}
		if name := sourceComment(doc); name != "" {
			where = fmt.Sprintf("%s: %s", source, name)
		}
		line, err := check(decoder, doc)
		switch {
		case err != nil:
			fmt.Fprintf(out, "FAIL %s: %v\n", where, err)
			failures++
		case line != "":
			fmt.Fprintln(out, line)
			objects++
		}
	}
}

// sourceComment is the template a document came from (helm's "# Source: chart/templates/x.yaml").
func sourceComment(doc []byte) string {
	for _, line := range strings.Split(string(doc), "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "# Source: "); ok {
			return rest
		}
	}
	return ""
}

func main() {
	decoder, err := newDecoder()
	if err != nil {
		fmt.Fprintln(os.Stderr, "manifestcheck:", err)
		os.Exit(2)
	}
	objects, failures := 0, 0
	if len(os.Args) < 2 {
		objects, failures = run(decoder, "stdin", os.Stdin, os.Stdout)
	}
	for _, path := range os.Args[1:] {
		file, err := os.Open(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, "manifestcheck:", err)
			os.Exit(2)
		}
		o, f := run(decoder, path, file, os.Stdout)
		file.Close()
		objects, failures = objects+o, failures+f
	}
	fmt.Printf("%d objects decoded strictly, %d failed\n", objects, failures)
	if failures > 0 || objects == 0 {
		os.Exit(1)
	}
}
