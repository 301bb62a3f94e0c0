package controller

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/switchyard/switchyard/migrator"
	"github.com/switchyard/switchyard/placement"
)

// Console pages about moves: the list and one move (both live over
// Server-Sent Events), abort and retry, plan changes and rebalancing.

// moveView is a move's live figures, as the page shows them and as each
// SSE event carries them.
type moveView struct {
	ID       string                   `json:"id"`
	Phase    migrator.Phase           `json:"phase"`
	Status   migrator.Status          `json:"status"`
	Progress string                   `json:"progress"`
	Backlog  int                      `json:"backlog"`
	Rates    string                   `json:"rates"`
	ETA      string                   `json:"eta,omitempty"`
	Pause    string                   `json:"pause,omitempty"`
	Message  string                   `json:"message,omitempty"`
	Error    string                   `json:"error,omitempty"`
	Updated  string                   `json:"updated"`
	Tables   []migrator.TableProgress `json:"tables"`
}

func newMoveView(m *migrator.Move) moveView {
	v := moveView{ID: m.ID, Phase: m.Phase, Status: m.Status, Progress: moveProgress(m), Backlog: m.Backlog, ETA: m.ETA,
		Message: m.Message, Error: m.Error, Updated: when(m.Updated), Tables: m.Tables}
	var copyRate float64
	for _, t := range m.Tables {
		copyRate += t.RowsPerS
	}
	v.Rates = fmt.Sprintf("copy %.0f rows/s · capture %.0f/s · apply %.0f/s", copyRate, m.CapturePerS, m.ApplyPerS)
	if !m.Switched.IsZero() {
		v.Pause = m.Pause.Round(time.Millisecond).String()
	}
	if v.Tables == nil {
		v.Tables = []migrator.TableProgress{}
	}
	for i := range v.Tables {
		v.Tables[i].Streams = nil
	}
	return v
}

func (s *Server) movesPage(c *gin.Context) {
	moves, err := s.migrator.List(c.Request.Context())
	if err != nil {
		s.consoleErr(c, err)
		return
	}
	sort.Slice(moves, func(i, j int) bool { return moves[i].Created.After(moves[j].Created) })
	c.Set("stream", "/ui/moves/events")
	s.render(c, http.StatusOK, "moves", "moves", map[string]any{"Moves": moves})
}

// phaseTime is one finished phase on a move's timeline.
type phaseTime struct {
	Phase  migrator.Phase
	Took   time.Duration
	Weight int64
}

var phaseOrder = []migrator.Phase{migrator.PhasePreflight, migrator.PhaseProvision, migrator.PhaseCapture, migrator.PhaseCopy,
	migrator.PhaseCatchUp, migrator.PhaseSwitch, migrator.PhaseRetained}

func (s *Server) movePage(c *gin.Context) {
	m, err := s.migrator.Get(c.Request.Context(), c.Param("id"))
	if err != nil {
		s.consoleErr(c, err)
		return
	}
	var phases []phaseTime
	for _, p := range phaseOrder {
		if d, ok := m.Took[p]; ok {
			phases = append(phases, phaseTime{Phase: p, Took: d.Round(time.Millisecond), Weight: max(d.Milliseconds(), 1)})
		}
	}
	c.Set("stream", "/ui/moves/"+url.PathEscape(m.ID)+"/events")
	s.render(c, http.StatusOK, "move", "moves", map[string]any{"Move": m, "View": newMoveView(m), "Phases": phases,
		"CanAbort": !m.Terminal() && m.Phase != migrator.PhaseRetained, "CanRetry": m.Status == migrator.StatusPaused})
}

// sseEvent writes one Server-Sent Event and flushes it.
func sseEvent(c *gin.Context, event string, data []byte) {
	fmt.Fprintf(c.Writer, "event: %s\ndata: %s\n\n", event, data)
	c.Writer.Flush()
}

func sseStart(c *gin.Context) {
	c.Header("Content-Type", "text/event-stream")
	c.Header("Cache-Control", "no-store")
	c.Header("X-Accel-Buffering", "no")
	c.Status(http.StatusOK)
	c.Writer.Flush()
}

// ssePoll is how often a stream re-reads what it shows; an event goes out
// only when something changed.
const ssePoll = 500 * time.Millisecond

// stream calls read every ssePoll and sends its answer as event when it
// changed, until read says stop, the client leaves or the server stops.
func (s *Server) stream(c *gin.Context, event string, read func() (any, bool, error)) {
	sseStart(c)
	tick := time.NewTicker(ssePoll)
	defer tick.Stop()
	var last []byte
	for {
		v, stop, err := read()
		if err != nil {
			s.log.Warn("console stream", "path", c.Request.URL.Path, "err", err)
		} else if data, _ := json.Marshal(v); string(data) != string(last) {
			sseEvent(c, event, data)
			last = data
		}
		if stop {
			sseEvent(c, "end", []byte("{}"))
			return
		}
		select {
		case <-c.Request.Context().Done():
			return
		case <-s.console.done:
			return
		case <-tick.C:
		}
	}
}

func (s *Server) moveEvents(c *gin.Context) {
	ctx, id := c.Request.Context(), c.Param("id")
	s.stream(c, "move", func() (any, bool, error) {
		m, err := s.migrator.Get(ctx, id)
		if err != nil {
			return nil, ctx.Err() != nil, err
		}
		return newMoveView(m), m.Terminal(), nil
	})
}

func (s *Server) movesEvents(c *gin.Context) {
	ctx := c.Request.Context()
	s.stream(c, "moves", func() (any, bool, error) {
		moves, err := s.migrator.List(ctx)
		if err != nil {
			return nil, ctx.Err() != nil, err
		}
		out := make([]moveView, 0, len(moves))
		for _, m := range moves {
			out = append(out, newMoveView(m))
		}
		return out, false, nil
	})
}

func (s *Server) consoleAbort(c *gin.Context) {
	m, err := s.abort(c.Request.Context(), c.Param("id"), actor(c))
	if err != nil {
		s.consoleErr(c, err)
		return
	}
	s.redirectFlash(c, "/ui/moves/"+url.PathEscape(m.ID), "Abort requested.")
}

func (s *Server) consoleRetry(c *gin.Context) {
	m, err := s.retry(c.Request.Context(), c.Param("id"), actor(c))
	if err != nil {
		s.consoleErr(c, err)
		return
	}
	s.redirectFlash(c, "/ui/moves/"+url.PathEscape(m.ID), "Retrying.")
}

// planChange changes a tenant's plan through changePlan, as PUT
// /v1/tenants/{id}/plan does, and shows the move it started.
func (s *Server) planChange(c *gin.Context) {
	id, plan := c.Param("id"), c.PostForm("plan")
	if plan == "" {
		s.consoleFail(c, http.StatusBadRequest, "invalid", "choose a plan")
		return
	}
	res, _, err := s.changePlan(c.Request.Context(), id, plan, actor(c), c.PostForm("reason"))
	if err != nil {
		s.consoleErr(c, err)
		return
	}
	if res.Move == nil {
		s.redirectFlash(c, "/ui/tenants/"+url.PathEscape(id), "Plan changed to "+plan+": same tier, no move needed.")
		return
	}
	flash := fmt.Sprintf("Plan changed to %s: this move takes %s to %s (%s).", plan, id, res.Move.To, res.Placement)
	s.redirectFlash(c, "/ui/moves/"+url.PathEscape(res.Move.ID), flash)
}

// rebalanceForm reads max_moves and spread (query or form).
func rebalanceForm(get func(string) string) (planRequest, error) {
	var req planRequest
	var err error
	if v := get("max_moves"); v != "" {
		if req.MaxMoves, err = strconv.Atoi(v); err != nil {
			return req, errBadRebalance
		}
	}
	if v := get("spread"); v != "" {
		if req.Spread, err = strconv.ParseFloat(v, 64); err != nil {
			return req, errBadRebalance
		}
	}
	return req, req.validRebalance()
}

// poolBar is one pool's utilisation before and after a plan.
type poolBar struct {
	Target                  string
	BeforePct, AfterPct     int
	BeforeWidth, AfterWidth float64
}

func poolBars(p placement.Plan) []poolBar {
	var out []poolBar
	for id, b := range p.Before {
		a := p.After[id]
		out = append(out, poolBar{Target: id, BeforePct: int(b*100 + 0.5), AfterPct: int(a*100 + 0.5),
			BeforeWidth: min(b*100, 100), AfterWidth: min(a*100, 100)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Target < out[j].Target })
	return out
}

func (s *Server) rebalancePage(c *gin.Context) {
	req, err := rebalanceForm(c.Query)
	if err != nil {
		s.consoleFail(c, http.StatusBadRequest, "invalid", err.Error())
		return
	}
	data := map[string]any{"MaxMoves": req.MaxMoves, "Spread": req.Spread}
	if c.Query("plan") != "" {
		plan, err := s.planRebalance(c.Request.Context(), req)
		if err != nil {
			s.consoleErr(c, err)
			return
		}
		data["Plan"], data["Bars"] = plan, poolBars(plan)
	}
	s.render(c, http.StatusOK, "rebalance", "rebalance", data)
}

// rebalanceApply plans again from the current loads and starts the moves,
// as POST /v1/rebalance with "dry_run": false does.
func (s *Server) rebalanceApply(c *gin.Context) {
	req, err := rebalanceForm(c.PostForm)
	if err != nil {
		s.consoleFail(c, http.StatusBadRequest, "invalid", err.Error())
		return
	}
	plan, err := s.planRebalance(c.Request.Context(), req)
	if err != nil {
		s.consoleErr(c, err)
		return
	}
	started, err := s.startMoves(c, plan, "rebalance")
	data := map[string]any{"MaxMoves": req.MaxMoves, "Spread": req.Spread, "Plan": plan, "Bars": poolBars(plan), "Started": started}
	if err != nil {
		status, _, msg := errStatus(err)
		c.Set("flash", fmt.Sprintf("%d of %d moves started; then: %s", len(started), len(plan.Moves), msg))
		s.render(c, status, "rebalance", "rebalance", data)
		return
	}
	s.render(c, http.StatusAccepted, "rebalance", "rebalance", data)
}
