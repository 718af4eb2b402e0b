// Command stationctl is the operators' and QA's command-line client of the station API: work
// orders, units, events, traveler records and station status. See station/ctl for the
// commands.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/devid-station/devid/station/ctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := ctl.Run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "stationctl:", err)
		if ctl.ExitCode(err) == 2 {
			fmt.Fprintln(os.Stderr, ctl.Usage)
		}
	}
	os.Exit(ctl.ExitCode(err))
}
