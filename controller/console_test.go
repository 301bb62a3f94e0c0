package controller

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/switchyard/switchyard/backup"
	"github.com/switchyard/switchyard/catalog"
)

func init() { gin.SetMode(gin.TestMode) }

func sessionOf(s *Server, cookie string) (consoleSession, bool) {
	c, _ := gin.CreateTestContext(httptest.NewRecorder())
	c.Request = httptest.NewRequest("GET", "/ui/", nil)
	if cookie != "" {
		c.Request.AddCookie(&http.Cookie{Name: sessionCookie, Value: cookie})
	}
	return s.session(c)
}

func TestConsoleSessions(t *testing.T) {
	const viewer, operator = "viewer-token-0123456789", "operator-token-0123456789"
	s := &Server{cfg: Config{Tokens: map[string]Role{viewer: RoleViewer, operator: RoleOperator}}}
	good := sessionValue(operator, time.Now().Add(time.Hour))
	payload, sig, _ := strings.Cut(good, ".")
	otherPayload, _, _ := strings.Cut(sessionValue(viewer, time.Now().Add(time.Hour)), ".")
	cases := []struct {
		name   string
		cookie string
		role   Role // "": no session
	}{
		{"valid operator", good, RoleOperator},
		{"valid viewer", sessionValue(viewer, time.Now().Add(time.Hour)), RoleViewer},
		{"no cookie", "", ""},
		{"expired", sessionValue(operator, time.Now().Add(-time.Second)), ""},
		{"signature of another payload", otherPayload + "." + sig, ""},
		{"payload changed", payload + "x." + sig, ""},
		{"signature cut", payload + "." + sig[:10], ""},
		{"no signature", payload, ""},
		{"token not configured", sessionValue("some-other-token-0123", time.Now().Add(time.Hour)), ""},
		{"garbage", "%%%.%%%", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sess, ok := sessionOf(s, tc.cookie)
			if ok != (tc.role != "") || sess.Role != tc.role {
				t.Fatalf("session %v %q, want role %q", ok, sess.Role, tc.role)
			}
			if ok && (len(sess.csrf) != 32 || !strings.HasPrefix(sess.Actor, string(tc.role)+":")) {
				t.Fatalf("session csrf %q actor %q", sess.csrf, sess.Actor)
			}
		})
	}
	// A token taken out of the config ends its sessions.
	delete(s.cfg.Tokens, operator)
	if _, ok := sessionOf(s, good); ok {
		t.Fatal("a removed token's session still signs in")
	}
	// Sessions of different tokens have different CSRF tokens.
	a, _ := sessionOf(s, sessionValue(viewer, time.Now().Add(time.Hour)))
	s.cfg.Tokens["billing-token-0123456789"] = RoleBilling
	b, _ := sessionOf(s, sessionValue("billing-token-0123456789", time.Now().Add(time.Hour)))
	if a.csrf == b.csrf {
		t.Fatal("two sessions share a CSRF token")
	}
}

func TestSafeNext(t *testing.T) {
	cases := map[string]string{
		"":                       "/ui/",
		"/ui/tenants?q=a":        "/ui/tenants?q=a",
		"https://evil.example/":  "/ui/",
		"//evil.example/ui/":     "/ui/",
		"/ui/\\evil":             "/ui/",
		"/v1/tenants":            "/ui/",
		"/ui/moves/x/../../v1/a": "/ui/moves/x/../../v1/a", // stays a path on this host
	}
	for in, want := range cases {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestConsoleTenantPageRendersDomains(t *testing.T) {
	con, err := newConsole()
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{console: con}
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	expires := at.Add(72 * time.Hour)
	rec := httptest.NewRecorder()
	c, _ := gin.CreateTestContext(rec)
	c.Request = httptest.NewRequest("GET", "/ui/tenants/a", nil)
	s.render(c, 200, "tenant", "tenants", map[string]any{"Tenant": catalog.Tenant{ID: "a", Plan: "free"},
		"Domains": []catalog.Domain{{Name: "shop.a.example", State: "verified", Created: at, VerifiedAt: &at}, {Name: "new.a.example", State: "pending", Created: at, Expires: &expires}}})
	body := rec.Body.String()
	// The verified domain: verified at, no expiry; the pending one: not
	// verified, its claim's expiry.
	for _, want := range []string{"shop.a.example", "new.a.example", "2026-12-01 10:00:00Z</td><td>—</td></tr>", "<td>—</td><td>2026-12-04 10:00:00Z</td></tr>"} {
		if !strings.Contains(body, want) {
			t.Errorf("tenant page lacks %q", want)
		}
	}
}

// The tenant page lists backups (id, time, store, rows, size), shows a
// followed job, and offers "Back up now" only to an operator on a
// controller with a store.
func TestConsoleTenantPageRendersBackups(t *testing.T) {
	con, err := newConsole()
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{console: con}
	at := time.Date(2026, 12, 2, 9, 30, 0, 0, time.UTC)
	m := &backup.Manifest{ID: "a.20261202T093000Z.abcdef", Tenant: "a", CreatedAt: at,
		Tables:  []backup.TableEntry{{Rows: 60}, {Rows: 40}},
		Objects: []backup.ObjectEntry{{Name: "x", Size: 1536}, {Name: "y", Size: 512}}}
	job := backupJob{ID: "backup-0123456789ab", Kind: "backup", Tenant: "a", Store: "local", State: "running",
		Progress: backup.Progress{Phase: "copy", Table: "public.orders", RowsDone: 30, RowsTotal: 100}}
	for _, tc := range []struct {
		name     string
		role     Role
		stores   []string
		wantForm bool
		wantNone bool // the "no backup store" note
	}{
		{"operator", RoleOperator, []string{"local"}, true, false},
		{"viewer", RoleViewer, []string{"local"}, false, false},
		{"billing", RoleBilling, []string{"local"}, false, false},
		{"operator, no store", RoleOperator, []string{}, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			c, _ := gin.CreateTestContext(rec)
			c.Request = httptest.NewRequest("GET", "/ui/tenants/a", nil)
			c.Set("session", consoleSession{Role: tc.role, Actor: string(tc.role) + ":x", csrf: "csrf-token"})
			s.render(c, 200, "tenant", "tenants", map[string]any{"Tenant": catalog.Tenant{ID: "a", Plan: "free"},
				"Backups": []backupListing{{Store: "local", Manifest: m}}, "Stores": tc.stores, "Job": job})
			body := rec.Body.String()
			for _, want := range []string{`<tr data-backup="a.20261202T093000Z.abcdef"><th scope="row">a.20261202T093000Z.abcdef</th>`,
				"<td>2026-12-02 09:30:00Z</td><td>local</td><td class=\"num\">100</td><td class=\"num\">2.0 KB</td>",
				`id="job-state" class="badge running">running<`, `id="job-rows">30 of 100<`, `id="job-step">copy public.orders<`} {
				if !strings.Contains(body, want) {
					t.Errorf("tenant page lacks %q", want)
				}
			}
			if got := strings.Contains(body, `id="backup-form"`); got != tc.wantForm {
				t.Errorf("Back up now form shown %v, want %v", got, tc.wantForm)
			}
			if got := strings.Contains(body, "no backup store configured"); got != tc.wantNone {
				t.Errorf("no-store note shown %v, want %v", got, tc.wantNone)
			}
		})
	}
}
