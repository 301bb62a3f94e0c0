package orders

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/switchyard/switchyard/catalog"
)

// ErrInvalidConfig is wrapped by every error Config.Validate returns.
var ErrInvalidConfig = errors.New("orders: invalid config")

// Config configures one instance of the orders app.
type Config struct {
	// Listen is the HTTP address; "127.0.0.1:0" picks a free port. Empty
	// means "127.0.0.1:0".
	Listen string
	// ServiceName is the Consul service this instance belongs to, e.g.
	// "app-shared". It must equal the Service of every target it serves.
	ServiceName string
	// ServiceID is this instance's Consul service ID
	// (default "<ServiceName>-<port>").
	ServiceID string
	// CatalogPrefix is the catalog's Consul KV prefix (catalog.DefaultPrefix).
	CatalogPrefix string
	// Consul is the client for the catalog watch and the registration.
	Consul *api.Client
	// Logger receives structured logs (slog.Default()).
	Logger *slog.Logger
	// Register makes Start register the instance in Consul and Stop
	// deregister it. DefaultConfig sets it; tests may leave it off.
	Register bool
	// DrainDelay is how long Stop waits between deregistering and closing
	// the listener, so routers see the instance leave before it stops
	// accepting connections. Zero means no wait.
	DrainDelay time.Duration
}

// DefaultConfig returns a Config for service serviceName that registers in
// Consul through client, listening on a free loopback port.
func DefaultConfig(serviceName string, client *api.Client) Config {
	return Config{
		Listen:        "127.0.0.1:0",
		ServiceName:   serviceName,
		CatalogPrefix: catalog.DefaultPrefix,
		Consul:        client,
		Logger:        slog.Default(),
		Register:      true,
	}
}

// Validate reports every field that cannot work, wrapping ErrInvalidConfig.
func (c *Config) Validate() error {
	var errs []string
	if c.Listen != "" {
		if _, port, err := net.SplitHostPort(c.Listen); err != nil || port == "" {
			errs = append(errs, fmt.Sprintf("listen %q must be host:port", c.Listen))
		}
	}
	if !catalog.ValidID(c.ServiceName) {
		errs = append(errs, fmt.Sprintf("service name %q must be a Consul service name (lowercase DNS label)", c.ServiceName))
	}
	if c.ServiceID != "" && (strings.TrimSpace(c.ServiceID) != c.ServiceID || strings.ContainsAny(c.ServiceID, "/ \t\r\n")) {
		errs = append(errs, fmt.Sprintf("service id %q must not contain '/' or whitespace", c.ServiceID))
	}
	if c.Consul == nil {
		errs = append(errs, "consul client is required")
	}
	if c.DrainDelay < 0 {
		errs = append(errs, "drain delay must not be negative")
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, strings.Join(errs, "; "))
	}
	return nil
}

// withDefaults returns a copy with empty fields filled in. ServiceID needs
// the port, so Start fills it.
func (c Config) withDefaults() Config {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:0"
	}
	if c.CatalogPrefix == "" {
		c.CatalogPrefix = catalog.DefaultPrefix
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}
