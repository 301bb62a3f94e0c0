package orders

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/consul/api"
)

// Consul health check of every instance.
const (
	checkInterval        = time.Second
	checkTimeout         = time.Second
	checkDeregisterAfter = time.Minute
	// reregisterInterval is how often the instance makes sure its local
	// agent still has its registration (an agent restarted without state
	// forgets it).
	reregisterInterval = 5 * time.Second
)

// registration returns the Consul service definition of this instance.
func (s *Server) registration() (*api.AgentServiceRegistration, error) {
	addr := s.Addr()
	if addr == "" {
		return nil, errors.New("register: server is not listening")
	}
	_, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("register: listen address %q: %w", addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("register: listen port %q: %w", portStr, err)
	}
	const host = "127.0.0.1"
	id := s.ServiceID()
	return &api.AgentServiceRegistration{
		ID:      id,
		Name:    s.cfg.ServiceName,
		Address: host,
		Port:    port,
		Meta:    map[string]string{"app": "orders"},
		Check: &api.AgentServiceCheck{
			CheckID:                        "service:" + id,
			Name:                           "orders livez",
			HTTP:                           "http://" + net.JoinHostPort(host, portStr) + "/livez",
			Method:                         "GET",
			Interval:                       checkInterval.String(),
			Timeout:                        checkTimeout.String(),
			DeregisterCriticalServiceAfter: checkDeregisterAfter.String(),
		},
	}, nil
}

// Register registers this instance in Consul as service ServiceName with ID
// ServiceID, address 127.0.0.1 and the listen port, with an HTTP check on
// /livez. Start calls it when Config.Register is set; it is idempotent.
func (s *Server) Register(ctx context.Context) error {
	reg, err := s.registration()
	if err != nil {
		return err
	}
	opts := api.ServiceRegisterOpts{ReplaceExistingChecks: true}.WithContext(ctx)
	if err := s.cfg.Consul.Agent().ServiceRegisterOpts(reg, opts); err != nil {
		return fmt.Errorf("register %s in consul: %w", reg.ID, err)
	}
	s.log.Info("registered in consul", "service", reg.Name, "service_id", reg.ID, "port", reg.Port)
	return nil
}

// Deregister removes this instance from Consul. Stop calls it when
// Config.Register is set.
func (s *Server) Deregister(ctx context.Context) error {
	id := s.ServiceID()
	q := (&api.QueryOptions{}).WithContext(ctx)
	if err := s.cfg.Consul.Agent().ServiceDeregisterOpts(id, q); err != nil {
		return fmt.Errorf("deregister %s from consul: %w", id, err)
	}
	s.log.Info("deregistered from consul", "service_id", id)
	return nil
}

// keepRegistered re-registers the instance whenever its agent has lost the
// registration (or a registration attempt failed), until ctx is done.
func (s *Server) keepRegistered(ctx context.Context) {
	t := time.NewTicker(reregisterInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		q := (&api.QueryOptions{}).WithContext(ctx)
		svc, _, err := s.cfg.Consul.Agent().Service(s.ServiceID(), q)
		if ctx.Err() != nil {
			return
		}
		if err == nil && svc != nil {
			continue
		}
		if err != nil && !isNotFound(err) {
			s.log.Warn("consul agent unreachable; will retry registration check", "err", err)
			continue
		}
		if err := s.Register(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("re-register in consul failed", "err", err)
		}
	}
}

// isNotFound reports the agent's 404 for an unknown service id.
func isNotFound(err error) bool {
	var se api.StatusError
	return errors.As(err, &se) && se.Code == 404
}
