package hubclient

import (
	"encoding/json"
	"errors"
	"testing"
)

// FuzzDecodeUsersPage feeds arbitrary hub answers to decodeUsersPage. It must
// never panic; it must fail with a JSON error exactly when the input is not
// valid JSON of the right shape; and a bare list must never have a next page.
func FuzzDecodeUsersPage(f *testing.F) {
	for _, seed := range []string{
		`{"items":[{"name":"a"}],"_pagination":{"offset":0,"limit":1,"total":2,"next":{"offset":1,"limit":1,"url":"http://h/x"}}}`,
		`{"items":[{"name":"a","auth_state":null,"servers":{"":{"ready":true,"pending":null}}}],"_pagination":{"next":null}}`,
		`[{"name":"a","auth_state":{"x":1}}]`,
		` [{"name":"b"}]`,
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
			var syntax *json.SyntaxError
			var typ *json.UnmarshalTypeError
			if !errors.As(err, &syntax) && !errors.As(err, &typ) {
				t.Fatalf("decodeUsersPage(%q) error %v (%T) is not a JSON decode error", raw, err, err)
			}
			return
		}
		if !json.Valid(raw) {
			t.Fatalf("decodeUsersPage(%q) accepted invalid JSON", raw)
		}
		var bare []json.RawMessage
		if json.Unmarshal(raw, &bare) == nil && p.Pagination.Next != nil {
			t.Fatalf("decodeUsersPage(%q): a bare list has a next page %+v", raw, *p.Pagination.Next)
		}
		for _, u := range p.Items {
			if u.AuthState != nil && !json.Valid(u.AuthState) {
				t.Fatalf("decodeUsersPage(%q): user %q has invalid auth_state %q", raw, u.Name, u.AuthState)
			}
		}
	})
}
