package controller

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/hashicorp/consul/api"

	"github.com/switchyard/switchyard/catalog"
)

// auditEntry is one line of the audit log: who, what, when, why, and the
// move (and the pause it caused) a change led to.
type auditEntry struct {
	At     time.Time `json:"at"`
	Actor  string    `json:"actor"`
	Action string    `json:"action"`
	Tenant string    `json:"tenant,omitempty"`
	Target string    `json:"target,omitempty"`
	Move   string    `json:"move,omitempty"`
	Detail string    `json:"detail,omitempty"`
	// Filled in when read: the linked move's state and the pause it caused.
	MovePhase string `json:"move_phase,omitempty"`
	PauseMS   *int64 `json:"pause_ms,omitempty"`
}

// audit appends an entry under <prefix>/audit/ (keys sort by time). An
// audit write failure is logged, never fails the request that caused it.
func (s *Server) audit(ctx context.Context, e auditEntry) {
	if err := writeAudit(ctx, s.client, s.store.Keys(), &e); err != nil {
		s.log.Warn("audit write failed", "err", err, "action", e.Action)
	}
	s.log.Info("audit", "actor", e.Actor, "action", e.Action, "tenant", e.Tenant, "target", e.Target, "move", e.Move, "detail", e.Detail)
}

// writeAudit stamps and stores one entry.
func writeAudit(ctx context.Context, client *api.Client, keys catalog.Keys, e *auditEntry) error {
	e.At = time.Now().UTC()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	key := keys.Audit(e.At.Format("20060102T150405.000000000") + "-" + hex.EncodeToString(b))
	data, _ := json.Marshal(e)
	_, err := client.KV().Put(&api.KVPair{Key: key, Value: data}, (&api.WriteOptions{}).WithContext(ctx))
	return err
}

func (s *Server) listAudit(c *gin.Context) {
	limit, ok := queryLimit(c, 200, 5000)
	if !ok {
		return
	}
	out, err := s.auditEntries(c.Request.Context(), auditFilter{Tenant: c.Query("tenant")}, limit)
	if err != nil {
		failErr(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"entries": out})
}

// auditFilter selects audit entries; empty fields match everything.
type auditFilter struct {
	Tenant string
	Action string
	Actor  string // a prefix: "operator" matches every operator token
	Move   string
}

func (f auditFilter) match(e auditEntry) bool {
	return (f.Tenant == "" || e.Tenant == f.Tenant) && (f.Action == "" || e.Action == f.Action) &&
		(f.Actor == "" || strings.HasPrefix(e.Actor, f.Actor)) && (f.Move == "" || e.Move == f.Move)
}

// auditEntries reads the newest limit entries matching f, newest first,
// each with its move's phase and the pause the move caused (the API's
// GET /v1/audit and the console's audit pages).
func (s *Server) auditEntries(ctx context.Context, f auditFilter, limit int) ([]auditEntry, error) {
	pairs, _, err := s.client.KV().List(s.store.Keys().Audits(), (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, err
	}
	sort.Slice(pairs, func(i, j int) bool { return pairs[i].Key > pairs[j].Key })
	out := []auditEntry{}
	for _, p := range pairs {
		var e auditEntry
		if json.Unmarshal(p.Value, &e) != nil || !f.match(e) {
			continue
		}
		if e.Move != "" {
			if m, err := s.migrator.Get(ctx, e.Move); err == nil {
				e.MovePhase = string(m.Phase)
				if !m.Switched.IsZero() {
					ms := m.Pause.Milliseconds()
					e.PauseMS = &ms
				}
			}
		}
		out = append(out, e)
		if len(out) == limit {
			break
		}
	}
	return out, nil
}
