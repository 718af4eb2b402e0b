package workflow

import (
	"errors"
	"fmt"
	"testing"
)

func TestMessageOf(t *testing.T) {
	cause := errors.New("permission denied")
	agent := fail(CodeAgentError, cause, "agent: write refused")
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"code and message", fail(CodeInstallFailed, nil, "writing %s", "/etc/devid/ldevid.pem"), "writing /etc/devid/ldevid.pem"},
		{"with a cause", fail(CodeCARejected, cause, "idevid enrollment"), "idevid enrollment: permission denied"},
		{"wrapped", fmt.Errorf("step ldevid_install: %w", fail(CodeInstallFailed, nil, "writing")), "step ldevid_install: writing"},
		{"another code in the chain stays", fail(CodeInstallFailed, agent, "writing"), "writing: AGENT_ERROR: agent: write refused: permission denied"},
		{"no code", cause, "permission denied"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := MessageOf(tc.err); got != tc.want {
				t.Errorf("MessageOf = %q, want %q", got, tc.want)
			}
		})
	}
}
