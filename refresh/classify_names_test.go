package refresh

import "github.com/tokenkeeper/tokenkeeper/keycloak"

// The simulation's tests name the grant failures' classification as the
// engine sees it; it is package keycloak's.
var Classify = keycloak.Classify

const (
	Transient = keycloak.Transient
	Terminal  = keycloak.Terminal
)
