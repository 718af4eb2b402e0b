package api

import (
	"testing"

	stationv1 "github.com/devid-station/devid/proto/station/v1"
)

// TestEveryMethodHasPermissions keeps the permission table complete: a method added to the
// proto without an entry would be refused to everyone.
func TestEveryMethodHasPermissions(t *testing.T) {
	desc := stationv1.Station_ServiceDesc
	var methods []string
	for _, m := range desc.Methods {
		methods = append(methods, "/"+desc.ServiceName+"/"+m.MethodName)
	}
	for _, s := range desc.Streams {
		methods = append(methods, "/"+desc.ServiceName+"/"+s.StreamName)
	}
	for _, m := range methods {
		if len(permissions[m]) == 0 {
			t.Errorf("no roles for %s", m)
		}
	}
	if len(methods) != len(permissions) {
		t.Errorf("%d methods, %d permission entries", len(methods), len(permissions))
	}
}
