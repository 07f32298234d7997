// Command kstatus-compare prints what Helm's kstatus (github.com/fluxcd/cli-utils, the
// version Helm v4.2.3 builds with) computes for each object it is given, so that rudder's
// Python port can be checked against the Go original object by object.
//
// Input on stdin: a JSON array of Kubernetes objects. Output on stdout: a JSON array, one
// entry per object and in the same order, of {status, message, conditions}.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/fluxcd/cli-utils/pkg/kstatus/status"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
)

type condition struct {
	Type    string `json:"type"`
	Status  string `json:"status"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

type verdict struct {
	Status     string      `json:"status"`
	Message    string      `json:"message"`
	Conditions []condition `json:"conditions"`
}

func main() {
	var raws []json.RawMessage
	if err := json.NewDecoder(os.Stdin).Decode(&raws); err != nil {
		fmt.Fprintf(os.Stderr, "kstatus-compare: reading a JSON array from stdin: %v\n", err)
		os.Exit(2)
	}
	verdicts := make([]verdict, 0, len(raws))
	for i, raw := range raws {
		obj := map[string]interface{}{}
		// Decode the way client-go's unstructured scheme does, so whole numbers are int64
		// and the rest float64, exactly as Helm sees objects read from the API server.
		if err := utiljson.Unmarshal(raw, &obj); err != nil {
			fmt.Fprintf(os.Stderr, "kstatus-compare: object %d: %v\n", i, err)
			os.Exit(2)
		}
		verdicts = append(verdicts, compute(&unstructured.Unstructured{Object: obj}))
	}
	encoder := json.NewEncoder(os.Stdout)
	encoder.SetEscapeHTML(false)
	if err := encoder.Encode(verdicts); err != nil {
		fmt.Fprintf(os.Stderr, "kstatus-compare: writing the result: %v\n", err)
		os.Exit(2)
	}
}

// compute runs status.Compute on one object. An error becomes an Unknown verdict carrying
// the error text (Helm's status readers also report a Compute error as Unknown); a panic
// (kstatus asserts the shape of some fields unchecked) becomes status "panic" so one odd
// object shows up as a mismatch instead of ending the whole run.
func compute(u *unstructured.Unstructured) (v verdict) {
	defer func() {
		if r := recover(); r != nil {
			v = verdict{Status: "panic", Message: fmt.Sprint(r), Conditions: []condition{}}
		}
	}()
	res, err := status.Compute(u)
	if err != nil {
		return verdict{Status: string(status.UnknownStatus), Message: err.Error(), Conditions: []condition{}}
	}
	conditions := make([]condition, 0, len(res.Conditions))
	for _, c := range res.Conditions {
		conditions = append(conditions, condition{
			Type:    string(c.Type),
			Status:  string(c.Status),
			Reason:  c.Reason,
			Message: c.Message,
		})
	}
	return verdict{Status: string(res.Status), Message: res.Message, Conditions: conditions}
}
