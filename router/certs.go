package router

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/internal/watch"
)

// The TLS listener's certificates: every certificate under
// catalog.Keys.Certificates, watched with internal/watch, indexed by the
// DNS names each one covers and swapped atomically, so a certificate put
// through the control API is served from the next handshake on every
// router, with no restart and no connection dropped (a connection keeps
// the certificate it was made with). A certificate is served only for a
// name it covers (exactly, or as the wildcard "*.<parent>"); a name no
// certificate covers gets the default certificate or a failed handshake
// (EdgeConfig.UnknownSNI) — never another tenant's certificate.

// ErrUnknownSNI fails a handshake for a name no certificate covers (policy
// UnknownSNIRefuse, or no default certificate).
var ErrUnknownSNI = errors.New("no certificate for this server name")

// certEntry is one servable certificate.
type certEntry struct {
	cert *tls.Certificate
	info catalog.CertificateInfo
}

// certIndex is one immutable generation of the certificates.
type certIndex struct {
	exact    map[string]*certEntry // lowercase DNS name → certificate
	wildcard map[string]*certEntry // parent of "*.<parent>" → certificate
	all      []*certEntry          // by name
	def      *certEntry            // the default certificate, nil if none
	skipped  []string              // what could not be served, and why (no key material)
}

// certStore serves certificates by SNI.
type certStore struct {
	cfg    EdgeConfig
	base   string // the base domain: only the default certificate covers it
	keys   catalog.Keys
	kv     *api.KV
	log    *slog.Logger
	idx    atomic.Pointer[certIndex]
	loaded chan struct{}
	once   sync.Once

	unknownDefault, unknownRefused prometheus.Counter
}

func newCertStore(cfg EdgeConfig, base string, kv *api.KV, prefix string, log *slog.Logger, reg prometheus.Registerer) *certStore {
	s := &certStore{cfg: cfg, base: strings.ToLower(strings.TrimSuffix(base, ".")), keys: catalog.NewKeys(prefix), kv: kv, log: log, loaded: make(chan struct{})}
	s.idx.Store(&certIndex{exact: map[string]*certEntry{}, wildcard: map[string]*certEntry{}})
	unknown := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "switchyard_router_tls_unknown_sni_total",
		Help: "TLS handshakes for a server name no certificate covers, by what they got (default certificate or refused).",
	}, []string{"outcome"})
	s.unknownDefault, s.unknownRefused = unknown.WithLabelValues("default"), unknown.WithLabelValues("refused")
	reg.MustRegister(unknown, &certCollector{s: s})
	return s
}

// run watches the certificates until ctx ends.
func (s *certStore) run(ctx context.Context) {
	l := &watch.Loop{Name: "tls certificates", Fetch: s.fetch, Logger: s.log}
	l.Run(ctx)
}

// fetch is one blocking query of the certificates' prefix.
func (s *certStore) fetch(ctx context.Context, index uint64) (uint64, error) {
	opts := (&api.QueryOptions{WaitIndex: index, WaitTime: 5 * time.Minute}).WithContext(ctx)
	pairs, meta, err := s.kv.List(s.keys.Certificates(), opts)
	if err != nil {
		return 0, fmt.Errorf("list certificates: %w", err)
	}
	if meta.LastIndex != index || index == 0 {
		idx := buildCertIndex(pairs, s.cfg.DefaultCert, s.base, time.Now())
		for _, why := range idx.skipped {
			s.log.Warn("tls certificate not served", "why", why)
		}
		s.idx.Store(idx)
		s.log.Info("tls certificates loaded", "certificates", len(idx.all), "default", idx.def != nil)
		s.once.Do(func() { close(s.loaded) })
	}
	return meta.LastIndex, nil
}

// buildCertIndex indexes the stored certificates; one that cannot be served
// is skipped (and said so, by name). Two covering the same name: the one
// that expires later wins (a rotation's new certificate).
func buildCertIndex(pairs api.KVPairs, defName, base string, now time.Time) *certIndex {
	idx := &certIndex{exact: map[string]*certEntry{}, wildcard: map[string]*certEntry{}}
	for _, p := range pairs {
		c, err := catalog.DecodeCertificate(p.Value)
		if err == nil {
			c.Name = p.Key[strings.LastIndexByte(p.Key, '/')+1:] // the key names it
		}
		var e certEntry
		if err == nil {
			e.cert, e.info, err = c.Parse(now)
		}
		if err != nil {
			idx.skipped = append(idx.skipped, err.Error())
			continue
		}
		idx.all = append(idx.all, &e)
		if c.Name == defName {
			idx.def = &e
		}
		var under []string
		if c.Name != defName {
			under = catalog.NamesUnderBase(e.info.DNSNames, base)
		}
		if len(under) > 0 {
			// Only the default certificate answers for the base domain
			// (the controller refuses such a certificate; one stored anyway
			// serves none of those names).
			idx.skipped = append(idx.skipped, fmt.Sprintf("certificate %s: names %v under the base domain %s (only the default certificate may)", c.Name, under, base))
		}
		for _, n := range e.info.DNSNames {
			if slices.Contains(under, n) {
				continue
			}
			m, key := idx.exact, n
			if parent, ok := strings.CutPrefix(n, "*."); ok {
				m, key = idx.wildcard, parent
			}
			if old := m[key]; old == nil || e.info.NotAfter.After(old.info.NotAfter) {
				m[key] = &e
			}
		}
	}
	sort.Slice(idx.all, func(i, j int) bool { return idx.all[i].info.Name < idx.all[j].info.Name })
	return idx
}

// getCertificate is tls.Config.GetCertificate.
func (s *certStore) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	idx := s.idx.Load()
	if e := idx.lookup(hello.ServerName); e != nil {
		return e.cert, nil
	}
	if s.cfg.UnknownSNI == UnknownSNIDefault && idx.def != nil {
		s.unknownDefault.Inc()
		return idx.def.cert, nil
	}
	s.unknownRefused.Inc()
	return nil, ErrUnknownSNI
}

// lookup is the certificate covering name: exact, else the wildcard of its
// parent (one label only, as TLS wildcards are).
func (idx *certIndex) lookup(name string) *certEntry {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if name == "" {
		return nil
	}
	if e := idx.exact[name]; e != nil {
		return e
	}
	if i := strings.IndexByte(name, '.'); i > 0 {
		return idx.wildcard[name[i+1:]]
	}
	return nil
}

// certStatus is the /readyz detail of the certificates.
type certStatus struct {
	Certificates int          `json:"certificates"`
	Default      bool         `json:"default_certificate"`
	Expiring     []certExpiry `json:"expiring,omitempty"`
	Skipped      []string     `json:"skipped,omitempty"`
}

type certExpiry struct {
	Name      string    `json:"name"`
	NotAfter  time.Time `json:"not_after"`
	ExpiresIn string    `json:"expires_in"`
}

// status says what is served and what expires within the warning.
func (s *certStore) status(now time.Time) certStatus {
	idx := s.idx.Load()
	st := certStatus{Certificates: len(idx.all), Default: idx.def != nil, Skipped: idx.skipped}
	for _, e := range idx.all {
		if left := e.info.NotAfter.Sub(now); left < s.cfg.ExpiryWarning {
			st.Expiring = append(st.Expiring, certExpiry{Name: e.info.Name, NotAfter: e.info.NotAfter, ExpiresIn: left.Round(time.Second).String()})
		}
	}
	return st
}

// certCollector exports expiry: the earliest over all certificates, and
// one series per certificate only for the default one and those expiring
// within the warning (so a fleet of per-domain certificates adds series
// only while someone must act on them).
type certCollector struct{ s *certStore }

var (
	certExpiryDesc = prometheus.NewDesc("switchyard_router_tls_cert_expiry_seconds",
		"Seconds until a certificate expires: the default certificate, and any expiring within the warning.", []string{"cert"}, nil)
	certMinExpiryDesc = prometheus.NewDesc("switchyard_router_tls_cert_min_expiry_seconds",
		"Seconds until the first of the served certificates expires.", nil, nil)
	certCountDesc = prometheus.NewDesc("switchyard_router_tls_certs",
		"Certificates served.", nil, nil)
)

var _ prometheus.Collector = (*certCollector)(nil)

func (c *certCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- certExpiryDesc
	ch <- certMinExpiryDesc
	ch <- certCountDesc
}

func (c *certCollector) Collect(ch chan<- prometheus.Metric) {
	idx, now := c.s.idx.Load(), time.Now()
	ch <- prometheus.MustNewConstMetric(certCountDesc, prometheus.GaugeValue, float64(len(idx.all)))
	if len(idx.all) == 0 {
		return
	}
	least := idx.all[0].info.NotAfter
	for _, e := range idx.all {
		if e.info.NotAfter.Before(least) {
			least = e.info.NotAfter
		}
		left := e.info.NotAfter.Sub(now)
		if e == idx.def || left < c.s.cfg.ExpiryWarning {
			ch <- prometheus.MustNewConstMetric(certExpiryDesc, prometheus.GaugeValue, left.Seconds(), e.info.Name)
		}
	}
	ch <- prometheus.MustNewConstMetric(certMinExpiryDesc, prometheus.GaugeValue, least.Sub(now).Seconds())
}
