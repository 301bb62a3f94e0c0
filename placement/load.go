package placement

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/switchyard/switchyard/catalog"
)

// TargetLoad is a target and what it currently holds. The figures are the
// target's whole load (they may include more than the tenants a caller
// lists); placement adds and subtracts tenants' figures to simulate moves.
type TargetLoad struct {
	Target  catalog.Target
	Tenants int
	Bytes   int64
	RPS     float64
}

// TenantLoad is a tenant and the load it brings wherever it lives.
type TenantLoad struct {
	Tenant catalog.Tenant
	Bytes  int64
	RPS    float64
}

// Headroom is the share of each capacity figure kept free: Fraction 0.1
// means a target with room for 100 GB takes tenants only up to 90 GB. A zero
// capacity figure means unlimited and has no headroom. For the tenant count
// the limit is rounded down but is at least one, so a target with any tenant
// capacity can always hold one tenant.
type Headroom struct {
	Fraction float64
}

// Validate reports whether the fraction is in [0, 1).
func (h Headroom) Validate() error {
	if !(h.Fraction >= 0 && h.Fraction < 1) {
		return fmt.Errorf("%w: headroom fraction %v must be in [0, 1)", ErrInvalidConfig, h.Fraction)
	}
	return nil
}

// limits are a target's capacity less headroom; unlimited figures are
// math.MaxInt, math.MaxInt64 and +Inf.
type limits struct {
	tenants int
	bytes   int64
	rps     float64
}

func (h Headroom) limits(c catalog.Capacity) limits {
	l := limits{tenants: math.MaxInt, bytes: math.MaxInt64, rps: math.Inf(1)}
	keep := 1 - h.Fraction
	if c.Tenants > 0 {
		l.tenants = c.Tenants
		if h.Fraction > 0 {
			l.tenants = max(1, min(c.Tenants, int(math.Floor(float64(c.Tenants)*keep+1e-9))))
		}
	}
	if c.Bytes > 0 {
		l.bytes = c.Bytes
		if h.Fraction > 0 {
			if f := math.Floor(float64(c.Bytes) * keep); f < float64(c.Bytes) {
				l.bytes = int64(f)
			}
		}
	}
	if c.RPS > 0 {
		l.rps = c.RPS * keep
	}
	return l
}

// fits reports whether a tenant with bytes b and rps r fits next to the load
// (n, held, rps) under lim.
func (lim limits) fits(n int, held int64, rps float64, b int64, r float64) bool {
	return n < lim.tenants && b <= lim.bytes-held && rps+r <= lim.rps
}

// Utilisation is the largest of the target's utilisation fractions (tenant
// count, bytes, RPS, each over its capacity figure, without headroom).
// Figures with zero (unlimited) capacity do not count; a target without any
// capacity figure has utilisation 0.
func (l TargetLoad) Utilisation() float64 {
	return utilisation(l.Target.Capacity, l.Tenants, l.Bytes, l.RPS)
}

func utilisation(c catalog.Capacity, n int, b int64, r float64) float64 {
	u := 0.0
	if c.Tenants > 0 {
		u = max(u, float64(n)/float64(c.Tenants))
	}
	if c.Bytes > 0 {
		u = max(u, float64(b)/float64(c.Bytes))
	}
	if c.RPS > 0 {
		u = max(u, r/c.RPS)
	}
	return u
}

// utilisationDetail spells out each figure of a utilisation.
func utilisationDetail(c catalog.Capacity, n int, b int64, r float64) string {
	var parts []string
	if c.Tenants > 0 {
		parts = append(parts, fmt.Sprintf("tenants %d/%d", n, c.Tenants))
	}
	if c.Bytes > 0 {
		parts = append(parts, fmt.Sprintf("bytes %s/%s", formatBytes(b), formatBytes(c.Bytes)))
	}
	if c.RPS > 0 {
		parts = append(parts, fmt.Sprintf("rps %s/%s", formatRPS(r), formatRPS(c.RPS)))
	}
	if len(parts) == 0 {
		return fmt.Sprintf("no capacity figures; %d tenants, %s, %s rps", n, formatBytes(b), formatRPS(r))
	}
	return strings.Join(parts, ", ")
}

func finiteNonNeg(f float64) bool { return f >= 0 && !math.IsInf(f, 1) }

func (l *TargetLoad) validate() error {
	c := l.Target.Capacity
	switch {
	case l.Target.ID == "":
		return fmt.Errorf("%w: target with an empty id", ErrInvalidInput)
	case l.Tenants < 0 || l.Bytes < 0 || !finiteNonNeg(l.RPS):
		return fmt.Errorf("%w: target %s: load figures must be finite and not negative", ErrInvalidInput, l.Target.ID)
	case c.Tenants < 0 || c.Bytes < 0 || !finiteNonNeg(c.RPS):
		return fmt.Errorf("%w: target %s: capacity figures must be finite and not negative", ErrInvalidInput, l.Target.ID)
	}
	return nil
}

func (t *TenantLoad) validate() error {
	if t.Bytes < 0 || !finiteNonNeg(t.RPS) {
		return fmt.Errorf("%w: tenant %s: load figures must be finite and not negative", ErrInvalidInput, t.Tenant.ID)
	}
	return nil
}

// Fits reports whether the tenant's load fits on the target within the
// target's capacity less headroom: one more tenant, its bytes and its RPS.
// A dedicated-cluster target holds at most one tenant. The error wraps
// ErrCapacity and names every figure that does not fit.
func Fits(t TenantLoad, target TargetLoad, h Headroom) error {
	if err := h.Validate(); err != nil {
		return err
	}
	var why []string
	if target.Target.Tier == catalog.TierDedicatedCluster && target.Tenants >= 1 {
		why = append(why, fmt.Sprintf("dedicated-cluster target already holds %d tenant(s) and holds at most one", target.Tenants))
	}
	lim := h.limits(target.Target.Capacity)
	c := target.Target.Capacity
	if target.Tenants >= lim.tenants {
		why = append(why, fmt.Sprintf("tenants %d+1 > %s", target.Tenants, limitText(fmt.Sprint(lim.tenants), fmt.Sprint(c.Tenants), h)))
	}
	if t.Bytes > lim.bytes-target.Bytes {
		why = append(why, fmt.Sprintf("bytes %s+%s > %s", formatBytes(target.Bytes), formatBytes(t.Bytes), limitText(formatBytes(lim.bytes), formatBytes(c.Bytes), h)))
	}
	if target.RPS+t.RPS > lim.rps {
		why = append(why, fmt.Sprintf("rps %s+%s > %s", formatRPS(target.RPS), formatRPS(t.RPS), limitText(formatRPS(lim.rps), formatRPS(c.RPS), h)))
	}
	if len(why) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrCapacity, strings.Join(why, "; "))
}

func limitText(limit, capacity string, h Headroom) string {
	if h.Fraction == 0 {
		return "capacity " + capacity
	}
	return fmt.Sprintf("limit %s (capacity %s less %g%% headroom)", limit, capacity, h.Fraction*100)
}

// ApplyPlan returns copies of targets and tenants with the plan's moves
// applied in order: each moved tenant's Target changes, and the loads of the
// targets it leaves and joins change by its tenant count, bytes and RPS. It
// is what a controller's simulation (and the tests) use to get the state a
// plan leads to. A move whose tenant is not on its From target, or whose
// target or tenant is unknown, is an error wrapping ErrInvalidInput.
func ApplyPlan(targets []TargetLoad, tenants []TenantLoad, p Plan) ([]TargetLoad, []TenantLoad, error) {
	outT := append([]TargetLoad(nil), targets...)
	outN := append([]TenantLoad(nil), tenants...)
	tix := make(map[string]int, len(outT))
	for i := range outT {
		tix[outT[i].Target.ID] = i
	}
	moved := make(map[string]int, len(p.Moves))
	for _, m := range p.Moves {
		moved[m.Tenant] = -1
	}
	for i := range outN {
		if j, ok := moved[outN[i].Tenant.ID]; ok {
			if j >= 0 {
				return nil, nil, fmt.Errorf("%w: duplicate tenant id %s", ErrInvalidInput, outN[i].Tenant.ID)
			}
			moved[outN[i].Tenant.ID] = i
		}
	}
	for k, m := range p.Moves {
		i := moved[m.Tenant]
		from, okF := tix[m.From]
		to, okT := tix[m.To]
		switch {
		case i < 0:
			return nil, nil, fmt.Errorf("%w: move %d: unknown tenant %s", ErrInvalidInput, k, m.Tenant)
		case !okF || !okT:
			return nil, nil, fmt.Errorf("%w: move %d: unknown target %s or %s", ErrInvalidInput, k, m.From, m.To)
		case outN[i].Tenant.Target != m.From:
			return nil, nil, fmt.Errorf("%w: move %d: tenant %s is on %s, not %s", ErrInvalidInput, k, m.Tenant, outN[i].Tenant.Target, m.From)
		}
		tl := &outN[i]
		tl.Tenant.Target = m.To
		outT[from].Tenants--
		outT[from].Bytes -= tl.Bytes
		outT[from].RPS -= tl.RPS
		outT[to].Tenants++
		outT[to].Bytes += tl.Bytes
		outT[to].RPS += tl.RPS
	}
	return outT, outN, nil
}

// formatBytes prints a byte count with a binary unit.
func formatBytes(b int64) string { return string(appendBytes(nil, b)) }

func appendBytes(buf []byte, b int64) []byte {
	if b == math.MaxInt64 {
		return append(buf, "unlimited"...)
	}
	const unit = 1024
	if b < unit && b > -unit {
		buf = strconv.AppendInt(buf, b, 10)
		return append(buf, " B"...)
	}
	f := float64(b)
	for _, u := range []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"} {
		f /= unit
		if math.Abs(f) < unit || u == "EiB" {
			buf = strconv.AppendFloat(buf, f, 'f', 1, 64)
			buf = append(buf, ' ')
			return append(buf, u...)
		}
	}
	return buf
}

func formatRPS(r float64) string {
	if math.IsInf(r, 1) {
		return "unlimited"
	}
	return fmt.Sprintf("%.4g", r)
}
