package server

import (
	"sort"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/devid-station/devid/station/api"
)

// newAPI builds the MES/operator API and its gRPC server (mTLS, role interceptors, health,
// reflection).
func (s *Server) newAPI(opts Options) (*grpc.Server, *api.Server, error) {
	roles := api.RoleTable{CommonNames: map[string]api.Role{}, Fingerprints: map[string]api.Role{}, URIs: map[string]api.Role{}}
	for _, b := range []struct {
		from map[string]string
		to   map[string]api.Role
	}{{s.rt.Roles, roles.CommonNames}, {s.rt.RoleFingerprints, roles.Fingerprints}, {s.rt.RoleURIs, roles.URIs}} {
		for k, r := range b.from {
			b.to[k] = api.Role(r)
		}
	}
	if err := roles.Validate(); err != nil {
		return nil, nil, err
	}
	s.roles = roles
	profiles := make([]string, 0, len(s.rt.Profiles))
	for name := range s.rt.Profiles {
		profiles = append(profiles, name)
	}
	sort.Strings(profiles)
	a, err := api.New(api.Config{
		Store: s.store, Runner: s.runner, Agents: s.gw, CAs: s.caHealth, Profiles: profiles,
		StationID: s.rt.StationID, Version: opts.Version, Roles: roles.Lookup, Clock: opts.Clock,
		Logger: s.log.With("component", "api"), ReportsDir: s.rt.ReportsDir,
	})
	if err != nil {
		return nil, nil, err
	}
	gs := grpc.NewServer(append(a.ServerOptions(), grpc.Creds(credentials.NewTLS(s.rt.APITLS)))...)
	a.Register(gs)
	return gs, a, nil
}

// caHealth reports each CA client's state.
func (s *Server) caHealth() []api.CAHealth {
	out := make([]api.CAHealth, 0, len(s.issuers))
	for _, is := range s.issuers {
		m := is.batcher.Metrics()
		c := is.state(m)
		p50, p95 := s.metrics.CAQuantiles(c.Name)
		out = append(out, api.CAHealth{Name: c.Name, Breaker: m.Breaker.String(),
			Requests: uint64(c.Requests), Errors: uint64(c.Errors), P50: p50, P95: p95})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
