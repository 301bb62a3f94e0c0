package controller

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/switchyard/switchyard/controller/ui"
	"github.com/switchyard/switchyard/migrator"
)

// The operator console (README "Console"): server-rendered pages at /ui/
// over the same internal functions as the JSON API, with every asset
// embedded (controller/ui). Signing in takes an API bearer token; the
// session cookie carries no token, only the token's id, an expiry and an
// HMAC keyed by the token itself, so any replica can check it, and
// removing a token from the config ends its sessions.

const (
	sessionCookie    = "switchyard_session"
	preSessionCookie = "switchyard_signin"
	flashCookie      = "switchyard_flash"
	sessionTTL       = 12 * time.Hour
)

// consoleSession is a signed-in console user.
type consoleSession struct {
	Role    Role
	Actor   string
	Expires time.Time
	csrf    string
}

// console holds the console's parsed pages and its tenant index.
type console struct {
	pages map[string]*template.Template
	index indexCache
	// done is closed when the server shuts down: live streams end.
	done     chan struct{}
	stopOnce sync.Once
}

func (c *console) stop() { c.stopOnce.Do(func() { close(c.done) }) }

func newConsole() (*console, error) {
	funcs := template.FuncMap{"when": when, "pause": movePause, "progress": moveProgress, "deref": func(p *int64) int64 { return *p },
		"dur": func(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }, "bytes": func(n int64) string { return size(float64(n)) }}
	names, err := fs.Glob(ui.Templates, "templates/*.html")
	if err != nil {
		return nil, err
	}
	c := &console{pages: map[string]*template.Template{}, done: make(chan struct{})}
	for _, n := range names {
		base := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if base == "layout" || base == "partials" {
			continue
		}
		t, err := template.New(base).Funcs(funcs).ParseFS(ui.Templates, "templates/layout.html", "templates/partials.html", n)
		if err != nil {
			return nil, fmt.Errorf("console template %s: %w", n, err)
		}
		c.pages[base] = t
	}
	return c, nil
}

// consoleRoutes mounts the console at /ui/.
func (s *Server) consoleRoutes(e *gin.Engine) {
	static, _ := fs.Sub(ui.Static, "static")
	for _, f := range []string{"console.css", "console.js"} {
		e.StaticFileFS("/ui/static/"+f, f, http.FS(static)) // the files only: no directory listing
	}
	e.GET("/ui", func(c *gin.Context) { c.Redirect(http.StatusMovedPermanently, "/ui/") })
	e.GET("/ui/signin", s.signinPage)
	e.POST("/ui/signin", s.signin)
	g := e.Group("/ui", s.consoleAuth)
	g.POST("/signout", s.consoleCSRF, s.signout)
	g.GET("/", s.fleetPage)
	g.GET("/tenants", s.tenantsPage)
	g.GET("/tenants/:id", s.tenantPage)
	g.GET("/moves", s.movesPage)
	g.GET("/moves/events", s.movesEvents)
	g.GET("/moves/:id", s.movePage)
	g.GET("/moves/:id/events", s.moveEvents)
	g.GET("/rebalance", s.rebalancePage)
	g.GET("/audit", s.auditPage)
	g.GET("/backup-jobs/:id/events", s.backupJobEvents)
	billing := s.consoleRole(RoleBilling, RoleOperator)
	operator := s.consoleRole(RoleOperator)
	g.POST("/tenants/:id/plan", billing, s.consoleCSRF, s.planChange)
	g.POST("/moves/:id/abort", operator, s.consoleCSRF, s.consoleAbort)
	g.POST("/moves/:id/retry", operator, s.consoleCSRF, s.consoleRetry)
	g.POST("/rebalance/apply", operator, s.consoleCSRF, s.rebalanceApply)
	g.POST("/tenants/:id/backups", operator, s.consoleCSRF, s.consoleBackup)
}

func mac(key, msg string) string {
	h := hmac.New(sha256.New, []byte(key))
	h.Write([]byte(msg))
	return hex.EncodeToString(h.Sum(nil))
}

// sessionValue signs a session for tok: "<payload>.<hmac>", the payload
// base64 of "<token id>|<expiry unix>".
func sessionValue(tok string, expires time.Time) string {
	payload := base64.RawURLEncoding.EncodeToString([]byte(tokenID(tok) + "|" + strconv.FormatInt(expires.Unix(), 10)))
	return payload + "." + mac(tok, "session|"+payload)
}

// session checks the request's session cookie; ok is false without a
// valid, unexpired one.
func (s *Server) session(c *gin.Context) (consoleSession, bool) {
	v, err := c.Cookie(sessionCookie)
	if err != nil {
		return consoleSession{}, false
	}
	payload, sig, ok := strings.Cut(v, ".")
	raw, err := base64.RawURLEncoding.DecodeString(payload)
	if !ok || err != nil {
		return consoleSession{}, false
	}
	id, exp, ok := strings.Cut(string(raw), "|")
	unix, err := strconv.ParseInt(exp, 10, 64)
	if !ok || err != nil || time.Now().After(time.Unix(unix, 0)) {
		return consoleSession{}, false
	}
	for tok, role := range s.cfg.Tokens {
		if tokenID(tok) != id || !hmac.Equal([]byte(sig), []byte(mac(tok, "session|"+payload))) {
			continue
		}
		return consoleSession{Role: role, Actor: string(role) + ":" + id, Expires: time.Unix(unix, 0), csrf: mac(tok, "csrf|"+payload)[:32]}, true
	}
	return consoleSession{}, false
}

func (s *Server) setCookie(c *gin.Context, name, value string, maxAge int) {
	http.SetCookie(c.Writer, &http.Cookie{Name: name, Value: value, Path: "/ui", MaxAge: maxAge, HttpOnly: true,
		Secure: c.Request.TLS != nil, SameSite: http.SameSiteStrictMode})
}

// wantsHTML says whether the caller is a browser page (errors as HTML)
// rather than a script (errors as the API's JSON).
func wantsHTML(c *gin.Context) bool { return strings.Contains(c.GetHeader("Accept"), "text/html") }

// consoleFail answers an error: an HTML page for a browser, the API's JSON
// error body otherwise; either way with the status.
func (s *Server) consoleFail(c *gin.Context, status int, code, msg string) {
	if !wantsHTML(c) {
		fail(c, status, code, msg)
		return
	}
	s.render(c, status, "error", "", map[string]any{"Status": status, "Text": http.StatusText(status), "Message": msg})
	c.Abort()
}

// consoleAuth lets a signed-in session through (setting role and actor as
// the API's auth does); a browser without one is sent to sign in.
func (s *Server) consoleAuth(c *gin.Context) {
	sess, ok := s.session(c)
	if !ok {
		if c.Request.Method == http.MethodGet && wantsHTML(c) {
			c.Redirect(http.StatusSeeOther, "/ui/signin?next="+url.QueryEscape(c.Request.URL.RequestURI()))
			c.Abort()
			return
		}
		s.consoleFail(c, http.StatusUnauthorized, "unauthenticated", "sign in at /ui/signin first")
		return
	}
	c.Set("session", sess)
	c.Set("role", sess.Role)
	c.Set("actor", sess.Actor)
	c.Next()
}

// consoleRole refuses (403) a session whose role is not one of allowed.
func (s *Server) consoleRole(allowed ...Role) gin.HandlerFunc {
	return func(c *gin.Context) {
		sess := c.MustGet("session").(consoleSession)
		for _, r := range allowed {
			if r == sess.Role {
				c.Next()
				return
			}
		}
		s.consoleFail(c, http.StatusForbidden, "forbidden", "role "+string(sess.Role)+" may not do this")
	}
}

// consoleCSRF refuses (403) a form post without the session's CSRF token.
func (s *Server) consoleCSRF(c *gin.Context) {
	sess := c.MustGet("session").(consoleSession)
	if got := c.PostForm("csrf"); got == "" || !hmac.Equal([]byte(got), []byte(sess.csrf)) {
		s.consoleFail(c, http.StatusForbidden, "csrf", "the form's CSRF token is missing or wrong: reload the page and try again")
		return
	}
	c.Next()
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// safeNext keeps a post-sign-in redirect on the console.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/ui/") || strings.HasPrefix(next, "//") || strings.Contains(next, "\\") {
		return "/ui/"
	}
	return next
}

func (s *Server) signinPage(c *gin.Context) {
	if _, ok := s.session(c); ok {
		c.Redirect(http.StatusSeeOther, safeNext(c.Query("next")))
		return
	}
	s.renderSignin(c, http.StatusOK, "")
}

func (s *Server) renderSignin(c *gin.Context, status int, msg string) {
	pre := randomHex(16) // double-submit CSRF token for the sign-in form
	s.setCookie(c, preSessionCookie, pre, 3600)
	c.Set("csrf", pre)
	s.render(c, status, "signin", "", map[string]any{"Error": msg, "Next": safeNext(c.Query("next") + c.PostForm("next"))})
}

func (s *Server) signin(c *gin.Context) {
	pre, err := c.Cookie(preSessionCookie)
	if err != nil || pre == "" || !hmac.Equal([]byte(pre), []byte(c.PostForm("csrf"))) {
		s.consoleFail(c, http.StatusForbidden, "csrf", "the sign-in form's CSRF token is missing or wrong: reload the page and try again")
		return
	}
	tok := strings.TrimSpace(c.PostForm("token"))
	role, ok := s.cfg.Tokens[tok]
	if tok == "" || !ok {
		s.renderSignin(c, http.StatusUnauthorized, "That token is not valid.")
		return
	}
	s.setCookie(c, sessionCookie, sessionValue(tok, time.Now().Add(sessionTTL)), int(sessionTTL/time.Second))
	s.setCookie(c, preSessionCookie, "", -1)
	s.log.Info("console sign-in", "actor", string(role)+":"+tokenID(tok))
	c.Redirect(http.StatusSeeOther, safeNext(c.PostForm("next")))
}

func (s *Server) signout(c *gin.Context) {
	s.setCookie(c, sessionCookie, "", -1)
	c.Redirect(http.StatusSeeOther, "/ui/signin")
}

// pageData is what every page template gets.
type pageData struct {
	Nav        string
	Session    *consoleSession
	CSRF       string
	CanBill    bool
	CanOperate bool
	Stream     string
	Flash      string
	Data       any
}

func (s *Server) render(c *gin.Context, status int, page, nav string, data any) {
	t, ok := s.console.pages[page]
	if !ok {
		c.AbortWithStatus(http.StatusInternalServerError)
		return
	}
	pd := pageData{Nav: nav, Data: data, Stream: c.GetString("stream"), Flash: c.GetString("flash"), CSRF: c.GetString("csrf")}
	if f, err := c.Cookie(flashCookie); err == nil && pd.Flash == "" {
		if b, err := base64.RawURLEncoding.DecodeString(f); err == nil {
			pd.Flash = string(b)
		}
		s.setCookie(c, flashCookie, "", -1)
	}
	if v, ok := c.Get("session"); ok {
		sess := v.(consoleSession)
		pd.Session, pd.CSRF = &sess, sess.csrf
		pd.CanBill = sess.Role == RoleBilling || sess.Role == RoleOperator
		pd.CanOperate = sess.Role == RoleOperator
	}
	c.Header("Content-Type", "text/html; charset=utf-8")
	c.Header("Cache-Control", "no-store")
	c.Header("X-Frame-Options", "DENY")
	c.Header("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'")
	c.Status(status)
	if err := t.ExecuteTemplate(c.Writer, "layout", pd); err != nil {
		s.log.Warn("console render", "page", page, "err", err)
	}
}

// redirectFlash sends the browser to location (303), which then shows msg
// once (a cookie, so that no link can put words on a console page).
func (s *Server) redirectFlash(c *gin.Context, location, msg string) {
	s.setCookie(c, flashCookie, base64.RawURLEncoding.EncodeToString([]byte(msg)), 60)
	c.Redirect(http.StatusSeeOther, location)
}

func when(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

func movePause(m *migrator.Move) string {
	if m.Switched.IsZero() {
		return "—"
	}
	return m.Pause.Round(time.Millisecond).String()
}

func moveProgress(m *migrator.Move) string { return fmt.Sprintf("%.0f%%", m.Progress()*100) }
