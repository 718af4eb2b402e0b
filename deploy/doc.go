// Package deploy holds what installs and watches a station: the example configuration
// (station.example.toml), the systemd units and system users (systemd/, sysusers.d/) and the
// Grafana dashboard (grafana/). It has no code; its tests check those files: every unit passes
// systemd-analyze verify and its security review, runs a binary that make build produces, and
// every metric the dashboard queries exists.
package deploy
