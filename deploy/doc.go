// Package deploy holds what installs and watches a station: the example configuration
// (station.example.toml), the systemd units and system users (systemd/, sysusers.d/), the
// Grafana dashboard (grafana/) and what a provisioned unit runs at its first boot in the field
// (firstboot/: devid-pkcs11-link and its oneshot unit, which put the LDevID key into the
// tpm2-pkcs11 token the Identity Service config names). It has no code; its tests check those
// files: every unit passes systemd-analyze verify and its security review and runs a binary
// that make build produces (or, in firstboot/, the script beside it), and every metric the
// dashboard queries exists. fixture/line's field test runs devid-pkcs11-link on a swtpm unit.
package deploy
