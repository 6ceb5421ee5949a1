// Package z2jh tests deploy/z2jh/values.yaml, tokenkeeper's values for the
// Zero to JupyterHub chart: it renders the chart with helm and loads the hub
// configuration the rendered chart gives, for the base URLs / and /jhub/
// and each of the chart's HTTPS modes, and checks where the pre-spawn hook
// and notebooks ask tokenkeeper and what the network policies let through.
// The tests carry the z2jh build tag (make z2jh runs them).
package z2jh
