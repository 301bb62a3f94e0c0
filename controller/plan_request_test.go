package controller

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"
)

// Rebalance and drain bodies: only an explicit "dry_run": false applies;
// no body, {}, null and true are dry runs; bad bodies are refused.
func TestPlanRequestDryRunByDefault(t *testing.T) {
	gin.SetMode(gin.ReleaseMode)
	for _, tc := range []struct {
		name       string
		body       string
		wantOK     bool
		wantDryRun bool
	}{
		{"no body", "", true, true},
		{"whitespace only", " \n", true, true},
		{"empty object", "{}", true, true},
		{"null dry_run", `{"dry_run": null}`, true, true},
		{"explicit true", `{"dry_run": true}`, true, true},
		{"other fields only", `{"max_moves": 3}`, true, true},
		{"explicit false", `{"dry_run": false}`, true, false},
		{"false with options", `{"dry_run": false, "spread": 0.2}`, true, false},
		{"cut off", `{"dry_run": false`, false, true},
		{"not a boolean", `{"dry_run": "no"}`, false, true},
		{"unknown field", `{"dryrun": false}`, false, true},
		{"trailing data", `{} {}`, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			c, _ := gin.CreateTestContext(rec)
			c.Request = httptest.NewRequest("POST", "/v1/rebalance", strings.NewReader(tc.body))
			if tc.body != "" {
				c.Request.Header.Set("Content-Type", "application/json")
			}
			var req planRequest
			ok := bindOptionalJSON(c, &req)
			if ok != tc.wantOK {
				t.Fatalf("bind ok = %v, want %v (answer %d %s)", ok, tc.wantOK, rec.Code, rec.Body)
			}
			if !ok {
				if rec.Code != http.StatusBadRequest {
					t.Fatalf("refused with %d, want 400", rec.Code)
				}
				return
			}
			if got := req.dryRun(); got != tc.wantDryRun {
				t.Fatalf("dryRun() = %v, want %v", got, tc.wantDryRun)
			}
		})
	}
}

// A required body stays required: bindJSON refuses an empty one.
func TestBindJSONRequiresABody(t *testing.T) {
	rec := httptest.NewRecorder()
	c, _ := gin.CreateTestContext(rec)
	c.Request = httptest.NewRequest("POST", "/v1/tenants", strings.NewReader(""))
	var v createTenantRequest
	if bindJSON(c, &v) || rec.Code != http.StatusBadRequest {
		t.Fatalf("empty body accepted: %d", rec.Code)
	}
}

// The OpenAPI document says that rebalance and drain are dry runs unless
// told otherwise, and that their body may be left out.
func TestOpenAPIPlanRequestDefaultsToDryRun(t *testing.T) {
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]struct {
					Type    string `json:"type"`
					Default *bool  `json:"default"`
				} `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
		Paths map[string]map[string]struct {
			RequestBody struct {
				Required bool `json:"required"`
			} `json:"requestBody"`
			Responses map[string]any `json:"responses"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(openAPIDoc, &doc); err != nil {
		t.Fatal(err)
	}
	dr := doc.Components.Schemas["PlanRequest"].Properties["dry_run"]
	if dr.Type != "boolean" || dr.Default == nil || !*dr.Default {
		t.Fatalf("PlanRequest.dry_run: %+v, want a boolean defaulting to true", dr)
	}
	for _, path := range []string{"/v1/rebalance", "/v1/targets/{id}/drain"} {
		op, ok := doc.Paths[path]["post"]
		if !ok {
			t.Fatalf("POST %s not documented", path)
		}
		if op.RequestBody.Required {
			t.Errorf("POST %s: body documented as required", path)
		}
		for _, code := range []string{"200", "202"} {
			if _, ok := op.Responses[code]; !ok {
				t.Errorf("POST %s: no %s response documented", path, code)
			}
		}
	}
}
