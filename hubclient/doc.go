// Package hubclient is a typed client for the part of the JupyterHub REST API
// that tokenkeeper uses: the paginated user list, one user with its
// auth_state, writing auth_state, the identity behind a token, a user's API
// tokens and stopping servers.
//
// A Client is built from the hub's JUPYTERHUB_API_URL and the service's
// JUPYTERHUB_API_TOKEN:
//
//	hub := hubclient.New(os.Getenv("JUPYTERHUB_API_URL"), os.Getenv("JUPYTERHUB_API_TOKEN"),
//		hubclient.WithConcurrency(10))
//	for u, err := range hub.Users(ctx, hubclient.UserQuery{State: "active"}) {
//		if err != nil {
//			return err
//		}
//		full, err := hub.User(ctx, u.Name) // only this call returns auth_state
//		...
//	}
//
// Every request carries the context it was given and waits for one of a
// bounded number of slots, so a sweep over many users cannot flood the hub.
// A non-2xx answer is an *APIError carrying the hub's status and message;
// transport failures are wrapped so that errors.As finds *url.Error and
// net.Error. Nothing here retries: the caller owns retrying.
package hubclient
