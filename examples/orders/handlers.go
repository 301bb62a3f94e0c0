package orders

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/switchyard/switchyard/catalog"
)

// Headers the router sets on every request it forwards (clients cannot set
// them), and the headers this app answers with.
const (
	HeaderTenantID     = "X-Tenant-Id"
	HeaderTenantTier   = "X-Tenant-Tier"
	HeaderTenantTarget = "X-Tenant-Target"
	HeaderTenantEpoch  = "X-Tenant-Epoch"
	// HeaderServedBy names the target that served the request. When the
	// request was not for a target this instance serves (health checks,
	// metrics, 400s and 421s) it holds the instance's service name.
	HeaderServedBy = "X-Served-By"
	// HeaderServedInstance is the Consul service ID of the instance.
	HeaderServedInstance = "X-Served-Instance"
)

// requestDBTimeout bounds the database work of one request, including
// waiting for a pooled connection.
const requestDBTimeout = 10 * time.Second

// scopeKey is where tenantScope leaves the request's scope in the gin context.
const scopeKey = "orders.scope"

// scope is what tenantScope resolved for a request.
type scope struct {
	tenant string
	target *catalog.Target
	store  *store
}

// routes builds the HTTP handler.
func (s *Server) routes() *gin.Engine {
	e := gin.New()
	e.HandleMethodNotAllowed = true
	// Redirects skip the middleware chain (no X-Served-By, no metrics);
	// /orders/ is simply not a route.
	e.RedirectTrailingSlash = false
	e.ContextWithFallback = true
	e.Use(s.observe(), s.recoverer())
	e.NoRoute(func(c *gin.Context) {
		writeError(c, newAPIError(http.StatusNotFound, CodeNotFound, "no such route: "+c.Request.URL.Path))
	})
	e.NoMethod(func(c *gin.Context) {
		writeError(c, newAPIError(http.StatusMethodNotAllowed, CodeMethod, c.Request.Method+" is not allowed on "+c.Request.URL.Path))
	})

	e.GET("/livez", func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"status": "ok"}) })
	e.GET("/readyz", s.readyz)
	e.GET("/metrics", gin.WrapH(promhttp.HandlerFor(s.metrics.registry, promhttp.HandlerOpts{Registry: s.metrics.registry})))

	g := e.Group("/orders", s.tenantScope())
	g.POST("", s.createOrder)
	g.GET("", s.listOrders)
	g.GET("/:id", s.getOrder)
	g.PUT("/:id", s.updateOrder)
	g.DELETE("/:id", s.deleteOrder)
	return e
}

// observe sets the X-Served-* headers, counts and times every request, and
// logs it (server errors at Warn/Error, the rest at Debug).
func (s *Server) observe() gin.HandlerFunc {
	return func(c *gin.Context) {
		start := time.Now()
		ctx := c.Request.Context()
		c.Header(HeaderServedBy, s.cfg.ServiceName)
		c.Header(HeaderServedInstance, s.ServiceID())
		c.Next()

		route := c.FullPath()
		if route == "" {
			route = "unmatched"
		}
		status := c.Writer.Status()
		elapsed := time.Since(start)
		s.metrics.requests.WithLabelValues(c.Request.Method, route, strconv.Itoa(status)).Inc()
		s.metrics.duration.WithLabelValues(c.Request.Method, route).Observe(elapsed.Seconds())

		// Failures of this app or its database are worth a look; 4xx, and
		// 503s like /readyz before the catalog loads, are routine; fenced
		// writes are expected during every cutover.
		level := slog.LevelDebug
		switch {
		case status >= 500 && status != http.StatusServiceUnavailable:
			level = slog.LevelError
		case status >= 500 && len(c.Errors) > 0 && isFenced(c.Errors.Last().Err):
			level = slog.LevelInfo
		case status >= 500 && len(c.Errors) > 0:
			level = slog.LevelWarn
		}
		if !s.log.Enabled(ctx, level) {
			return
		}
		attrs := []slog.Attr{
			slog.String("method", c.Request.Method), slog.String("route", route),
			slog.Int("status", status), slog.Duration("elapsed", elapsed),
		}
		if sc, ok := c.Get(scopeKey); ok {
			attrs = append(attrs, slog.String("tenant", sc.(*scope).tenant), slog.String("target", sc.(*scope).target.ID))
		}
		if len(c.Errors) > 0 {
			attrs = append(attrs, slog.String("err", strings.Join(c.Errors.Errors(), "; ")))
		}
		s.log.LogAttrs(ctx, level, "request", attrs...)
	}
}

// recoverer turns a handler panic into a logged 500 with a JSON body.
func (s *Server) recoverer() gin.HandlerFunc {
	return func(c *gin.Context) {
		defer func() {
			r := recover()
			if r == nil {
				return
			}
			if err, ok := r.(error); ok && errors.Is(err, http.ErrAbortHandler) {
				panic(r)
			}
			s.log.Error("handler panic", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			if !c.Writer.Written() {
				writeError(c, newAPIError(http.StatusInternalServerError, CodeInternal, "internal error"))
			} else {
				c.Abort()
			}
		}()
		c.Next()
	}
}

// readyz is 200 once the catalog snapshot is loaded and until Stop begins.
func (s *Server) readyz(c *gin.Context) {
	if s.draining.Load() {
		writeError(c, newAPIError(http.StatusServiceUnavailable, CodeNotReady, "shutting down"))
		return
	}
	select {
	case <-s.watcher.Ready():
		c.JSON(http.StatusOK, gin.H{"status": "ready"})
	default:
		writeError(c, newAPIError(http.StatusServiceUnavailable, CodeNotReady, "catalog not loaded yet"))
	}
}

// tenantScope resolves the request's tenant and target from the router's
// headers and the catalog snapshot, and opens the tenant's database. The
// tenant comes only from X-Tenant-Id: never from the path, query or body.
func (s *Server) tenantScope() gin.HandlerFunc {
	return func(c *gin.Context) {
		tenant := c.GetHeader(HeaderTenantID)
		switch {
		case tenant == "":
			writeError(c, &apiError{status: http.StatusBadRequest, body: ErrorResponse{Error: CodeMissingTenant, Message: HeaderTenantID + " header is required", Field: HeaderTenantID}})
			return
		case !catalog.ValidID(tenant):
			writeError(c, fieldError(HeaderTenantID, HeaderTenantID+" must be a tenant id (lowercase DNS label)"))
			return
		}
		targetID := c.GetHeader(HeaderTenantTarget)
		switch {
		case targetID == "":
			writeError(c, &apiError{status: http.StatusBadRequest, body: ErrorResponse{Error: CodeMissingTarget, Message: HeaderTenantTarget + " header is required", Field: HeaderTenantTarget}})
			return
		case !catalog.ValidID(targetID):
			writeError(c, fieldError(HeaderTenantTarget, HeaderTenantTarget+" must be a target id (lowercase DNS label)"))
			return
		}
		select {
		case <-s.watcher.Ready():
		default:
			e := newAPIError(http.StatusServiceUnavailable, CodeNotReady, "catalog not loaded yet; retry shortly")
			e.retryAfter = true
			writeError(c, e)
			return
		}
		target, ok := s.watcher.Snapshot().Target(targetID)
		if !ok {
			writeError(c, newAPIError(http.StatusMisdirectedRequest, CodeMisdirected, fmt.Sprintf("target %q is not in the catalog", targetID)))
			return
		}
		if target.Service != s.cfg.ServiceName {
			writeError(c, newAPIError(http.StatusMisdirectedRequest, CodeMisdirected,
				fmt.Sprintf("target %q is served by service %q, not %q", targetID, target.Service, s.cfg.ServiceName)))
			return
		}
		c.Header(HeaderServedBy, target.ID)

		ctx, cancel := context.WithTimeout(c.Request.Context(), requestDBTimeout)
		defer cancel()
		c.Request = c.Request.WithContext(ctx)

		sc := &scope{tenant: tenant, target: target}
		c.Set(scopeKey, sc)
		dsn, err := target.DSNFor(tenant)
		if err != nil {
			s.fail(c, fmt.Errorf("target %s: %w", target.ID, err))
			return
		}
		db, err := s.pools.get(ctx, dsn)
		if err != nil {
			s.fail(c, fmt.Errorf("open database of target %s: %w", target.ID, err))
			return
		}
		sc.store = &store{db: db, tenant: tenant, metrics: s.metrics}
		c.Next()
	}
}

// fail answers with err's classification, recording err (never sent to the
// client when it is a database or internal error) for the request log.
func (s *Server) fail(c *gin.Context, err error) {
	_ = c.Error(err)
	writeError(c, classify(err))
}

func scopeOf(c *gin.Context) *scope { return c.MustGet(scopeKey).(*scope) }

func (s *Server) createOrder(c *gin.Context) {
	in, err := decodeOrder(c.Writer, c.Request)
	if err != nil {
		s.fail(c, err)
		return
	}
	o, err := scopeOf(c).store.create(c.Request.Context(), in)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.Header("Location", "/orders/"+strconv.FormatInt(o.ID, 10))
	c.JSON(http.StatusCreated, o)
}

func (s *Server) listOrders(c *gin.Context) {
	limit, afterID, err := parsePage(c.Query("limit"), c.Query("after_id"))
	if err != nil {
		s.fail(c, err)
		return
	}
	page, err := scopeOf(c).store.list(c.Request.Context(), afterID, limit)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, page)
}

func (s *Server) getOrder(c *gin.Context) {
	id, err := parseID(c.Param("id"))
	if err != nil {
		s.fail(c, err)
		return
	}
	o, err := scopeOf(c).store.get(c.Request.Context(), id)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, o)
}

func (s *Server) updateOrder(c *gin.Context) {
	id, err := parseID(c.Param("id"))
	if err != nil {
		s.fail(c, err)
		return
	}
	in, err := decodeOrder(c.Writer, c.Request)
	if err != nil {
		s.fail(c, err)
		return
	}
	o, err := scopeOf(c).store.update(c.Request.Context(), id, in)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, o)
}

func (s *Server) deleteOrder(c *gin.Context) {
	id, err := parseID(c.Param("id"))
	if err != nil {
		s.fail(c, err)
		return
	}
	if err := scopeOf(c).store.delete(c.Request.Context(), id); err != nil {
		s.fail(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}
