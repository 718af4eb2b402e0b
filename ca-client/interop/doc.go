// Package interop holds only tests: it checks the station's EST client
// (package github.com/devid-station/devid/ca-client/est) against an EST
// server that the project did not write, github.com/globalsign/est, and the
// other way round the project's dev EST CA (fixture/estca) against that
// library's EST client.
//
// The server is the command in the estserver folder, the client the command
// in estserver/estclient. It is a separate Go
// module, built and run as a separate process by the test, because
// github.com/globalsign/est depends on go-tpm v0.3, which cannot be built in
// the same module graph as the go-tpm v0.9 this module requires. For that
// reason the nested module must never import this module, and this module
// must never import it; `go build ./...` and `go vet ./...` here skip it.
//
// The test needs the Go module proxy (or a module cache that already holds
// the server's dependencies) to build the server; when the modules cannot be
// downloaded it skips with a message saying so.
package interop
