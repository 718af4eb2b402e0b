package jsonindent

import (
	"bytes"
	"encoding/json"
	"testing"
)

// indentSamples are compact JSON values of every shape: nested, empty, strings with escapes,
// quotes, brackets and commas inside.
var indentSamples = []string{
	`{}`, `[]`, `null`, `"x"`, `1.5e3`, `{"a":[]}`, `{"a":{}}`, `[[],[{}],{"b":[1,2,{"c":null}]}]`,
	`{"s":"a,b:c{d}[e]","t":"q\"uo\\\"te\\","u":"\u003c\u2028\n"}`, `["\\",",","{","}","[","]",":"]`,
	`{"a":true,"b":false,"c":-0.5,"d":{"e":{"f":{"g":[]}}}}`, `""`, `[""]`, `{"":""}`,
}

// TestAppend holds Append to json.Indent.
func TestAppend(t *testing.T) {
	for _, s := range indentSamples {
		checkIndent(t, []byte(s))
	}
}

// FuzzAppend: for any compact JSON (what json.Marshal writes), Append writes what
// json.Indent writes.
func FuzzAppend(f *testing.F) {
	for _, s := range indentSamples {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if !json.Valid(data) {
			return
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, data); err != nil || !bytes.Equal(compact.Bytes(), data) {
			return
		}
		checkIndent(t, data)
	})
}

func checkIndent(t *testing.T, src []byte) {
	t.Helper()
	var want bytes.Buffer
	if err := json.Indent(&want, src, "", "  "); err != nil {
		t.Fatalf("%s: %v", src, err)
	}
	if got := Append([]byte("prefix"), src, "  "); !bytes.Equal(got, append([]byte("prefix"), want.Bytes()...)) {
		t.Fatalf("%s: indented\n%s\nwant\n%s", src, got[len("prefix"):], want.Bytes())
	}
}
