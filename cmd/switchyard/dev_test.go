package main

import (
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/switchyard/switchyard/controller"
)

// consoleLine is how a reader finds the console in `switchyard dev`'s
// welcome: its URL and the operator token, then the viewer token.
var consoleLine = regexp.MustCompile(`Console:\s+(\S+)\s+sign in with the operator token (\S+)\s+\(or the viewer token (\S+),`)

// The welcome `make run` prints names the console's URL on the controller's
// address and tokens the controller accepts with the roles it says.
func TestWelcomePrintsConsoleURLAndTokens(t *testing.T) {
	for _, tc := range []struct {
		name, controllerOn, wantURL, tok string
	}{
		{"default", "127.0.0.1:7070", "http://127.0.0.1:7070/ui/", "3f9a0c"},
		{"other port", "127.0.0.1:17070", "http://127.0.0.1:17070/ui/", "b71e44"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &devStack{routerOn: "127.0.0.1:8080", adminOn: "127.0.0.1:9080", controllerOn: tc.controllerOn, dataDir: t.TempDir(),
				secret: []byte("0123456789abcdef0123456789abcdef"),
				tokens: map[string]string{"operator": "op-" + tc.tok, "billing": "bill-" + tc.tok, "viewer": "view-" + tc.tok}}
			var out strings.Builder
			d.welcome(&out, "127.0.0.1:8500")
			m := consoleLine.FindStringSubmatch(out.String())
			if m == nil {
				t.Fatalf("no console line in:\n%s", out.String())
			}
			if m[1] != tc.wantURL {
				t.Errorf("console URL %q, want %q", m[1], tc.wantURL)
			}
			if _, err := url.ParseRequestURI(m[1]); err != nil {
				t.Errorf("console URL %q: %v", m[1], err)
			}
			tokens := d.controllerTokens()
			if role, ok := tokens[m[2]]; !ok || role != controller.RoleOperator {
				t.Errorf("printed operator token %q: the controller has it as %q (known %v)", m[2], role, ok)
			}
			if role, ok := tokens[m[3]]; !ok || role != controller.RoleViewer {
				t.Errorf("printed viewer token %q: the controller has it as %q (known %v)", m[3], role, ok)
			}
			if strings.Contains(out.String(), "%!") {
				t.Errorf("a formatting verb went wrong:\n%s", out.String())
			}
		})
	}
}
