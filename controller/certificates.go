package controller

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/switchyard/switchyard/catalog"
)

// defaultCertName is the certificate routers serve for the base domain
// and, by default, for names no certificate covers (router -tls-default-cert).
const defaultCertName = "default"

// putCertificateRequest is the body of PUT /v1/certificates/{name}: a PEM
// chain and its PEM private key. The key is write-only: no answer, audit
// entry or log carries it.
type putCertificateRequest struct {
	CertPEM string `json:"cert_pem"`
	KeyPEM  string `json:"key_pem"`
}

// certificateRoutes registers the TLS certificate endpoints (operators only).
func (s *Server) certificateRoutes(v1 *gin.RouterGroup, operator gin.HandlerFunc) {
	v1.PUT("/certificates/:name", operator, s.putCertificate)
}

// putCertificate stores a certificate every router serves by SNI from its
// next handshake on; the answer names what it covers, never the key.
func (s *Server) putCertificate(c *gin.Context) {
	name := c.Param("name")
	if !catalog.ValidCertName(name) {
		fail(c, http.StatusBadRequest, "invalid", fmt.Sprintf("certificate name %q must be 1-128 lowercase letters, digits, '.', '-' or '_'", name))
		return
	}
	var req putCertificateRequest
	if !bindJSON(c, &req) {
		return
	}
	if strings.TrimSpace(req.CertPEM) == "" || strings.TrimSpace(req.KeyPEM) == "" {
		fail(c, http.StatusBadRequest, "invalid", "body must set cert_pem and key_pem (PEM)")
		return
	}
	cert := catalog.Certificate{Name: name, CertPEM: req.CertPEM, KeyPEM: req.KeyPEM}
	if name != defaultCertName {
		// Only the default certificate may answer for the base domain: any
		// other is a custom domain's and must never reach a tenant's
		// subdomain.
		_, parsed, err := cert.Parse(time.Now())
		if errors.Is(err, catalog.ErrBadCertificate) {
			fail(c, http.StatusBadRequest, "bad_certificate", err.Error())
			return
		}
		if under := catalog.NamesUnderBase(parsed.DNSNames, s.cfg.Domains.BaseDomain); len(under) > 0 {
			fail(c, http.StatusBadRequest, "under_base_domain", fmt.Sprintf("certificate %s names %s, under the base domain %s: only the %q certificate may",
				name, strings.Join(under, ", "), s.cfg.Domains.BaseDomain, defaultCertName))
			return
		}
	}
	info, err := s.store.PutCertificate(c.Request.Context(), cert)
	if errors.Is(err, catalog.ErrBadCertificate) {
		fail(c, http.StatusBadRequest, "bad_certificate", err.Error())
		return
	}
	if err != nil {
		failErr(c, err)
		return
	}
	s.audit(c.Request.Context(), auditEntry{Actor: actor(c), Action: "certificate.put", Target: name,
		Detail: fmt.Sprintf("names %s, expires %s", strings.Join(info.DNSNames, ","), info.NotAfter.UTC().Format("2006-01-02T15:04:05Z"))})
	c.JSON(http.StatusOK, info)
}
