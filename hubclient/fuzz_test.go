package hubclient

import (
	"encoding/json"
	"errors"
	"testing"
)

// FuzzDecodeUsersPage feeds arbitrary hub answers to decodeUsersPage: it must
// never panic, a failure must be a *decodeError that unwraps to the JSON
// error, and a bare list must never produce a next link.
func FuzzDecodeUsersPage(f *testing.F) {
	for _, seed := range []string{
		`{"items":[{"name":"a"}],"_pagination":{"offset":0,"limit":1,"total":2,"next":{"offset":1,"limit":1,"url":"http://h/x"}}}`,
		`{"items":[{"name":"a","auth_state":null,"servers":{"":{"ready":true}}}],"_pagination":{"next":null}}`,
		`[{"name":"a","auth_state":{"x":1}}]`,
		`[]`,
		`{"items":null}`,
		`{}`,
		`null`,
		``,
		`[`,
		`{"items":[{"name":1}]}`,
		`{"_pagination":{"next":{"offset":-1,"limit":-5}}}`,
		"[\x00]",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		p, err := decodeUsersPage(raw)
		if err != nil {
			var derr *decodeError
			if !errors.As(err, &derr) {
				t.Fatalf("decodeUsersPage(%q) error %v (%T) is not a *decodeError", raw, err, err)
			}
			if derr.Unwrap() == nil {
				t.Fatalf("decodeUsersPage(%q) error %v unwraps to nil", raw, err)
			}
			return
		}
		if !json.Valid(raw) {
			t.Fatalf("decodeUsersPage(%q) accepted invalid JSON", raw)
		}
		if len(raw) > 0 && raw[0] == '[' && p.Pagination.Next != nil {
			t.Fatalf("decodeUsersPage(%q): a bare list has a next link %+v", raw, *p.Pagination.Next)
		}
	})
}
