package integration

import "testing"

func TestKeycloakMessage(t *testing.T) {
	tests := []struct {
		name, page, want string
	}{
		{
			name: "keycloak.v2 field error",
			page: `<div id="input-error-container-username">
			  <div class="pf-v5-c-helper-text" aria-live="polite"><div class="pf-v5-c-helper-text">
			    <div class="pf-v5-c-helper-text__item pf-m-error" id="input-error-username">
			      <span class="pf-v5-c-helper-text__item-text">
			        Invalid username or password.
			      </span>`,
			want: "Invalid username or password.",
		},
		{
			name: "alert",
			page: `<span class="pf-v5-c-alert__title kc-feedback-text">Action expired &amp; restarted.</span>`,
			want: "Action expired & restarted.",
		},
		{
			name: "login page without an error",
			page: `<div id="input-error-container-username">
			  </div></div><h1 id="kc-page-title">Sign in to your account</h1>`,
			want: "",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := keycloakMessage(tt.page); got != tt.want {
				t.Errorf("keycloakMessage() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestFormAction(t *testing.T) {
	const want = "http://127.0.0.1:28080/realms/jupyter/login-actions/authenticate?session_code=a&execution=b"
	for _, page := range []string{
		`<form id="kc-form-login" onsubmit="login.disabled = true; return true;" action="http://127.0.0.1:28080/realms/jupyter/login-actions/authenticate?session_code=a&amp;execution=b" method="post">`,
		`<form action="http://127.0.0.1:28080/realms/jupyter/login-actions/authenticate?session_code=a&amp;execution=b" id="kc-form-login" method="post">`,
	} {
		got, err := loginFormAction(page)
		if err != nil || got != want {
			t.Errorf("loginFormAction(%.40q...) = %q, %v; want %q", page, got, err, want)
		}
	}
	if _, err := loginFormAction(`<form id="kc-register-form" action="/x">`); err == nil {
		t.Errorf("loginFormAction found a form on a page without the login form")
	}
}
