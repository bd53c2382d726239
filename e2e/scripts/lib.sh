# Shell helpers shared by the e2e scripts (sourced, not run): certificates signed by the local
# CA, kubeconfigs, and background processes tracked by pid files.
# shellcheck shell=bash

now_ms() { date +%s%3N; }

# pki_issue DIR NAME SUBJECT [EXTENSIONS]: ECDSA P-256 key + certificate DIR/NAME.{key,crt}
# signed by DIR/ca.{crt,key}; a client certificate unless EXTENSIONS say otherwise.
pki_issue() {
  local pki="$1" name="$2" subject="$3" ext="${4:-}"
  openssl ecparam -name prime256v1 -genkey -noout -out "$pki/$name.key" 2>/dev/null
  openssl req -new -key "$pki/$name.key" -subj "$subject" -out "$pki/$name.csr" 2>/dev/null
  printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
    "${ext:-extendedKeyUsage=clientAuth}" >"$pki/$name.ext"
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$pki/$name.ext" -out "$pki/$name.crt" 2>/dev/null
  rm -f "$pki/$name.csr" "$pki/$name.ext"
  chmod 600 "$pki/$name.key"
}

# pki_has_ip CERT IP: whether the certificate names IP among its subject alternative names.
pki_has_ip() {
  openssl x509 -in "$1" -noout -ext subjectAltName 2>/dev/null | grep -qE "IP Address:$2(,|$)"
}

# kubeconfig_write FILE SERVER CA USER CERT KEY: a kubeconfig with the certificates embedded.
kubeconfig_write() {
  local file="$1" server="$2" ca="$3" user="$4" cert="$5" key="$6"
  cat >"$file.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: switchboard-e2e
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 <"$ca")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 <"$cert")
    client-key-data: $(base64 -w0 <"$key")
contexts:
- name: switchboard-e2e
  context:
    cluster: switchboard-e2e
    user: $user
    namespace: default
current-context: switchboard-e2e
EOF
  chmod 600 "$file.tmp"
  mv "$file.tmp" "$file"
}

# proc_pid PIDFILE PATTERN: prints the pid if PIDFILE names a live process whose command line
# contains PATTERN (so a recycled pid is not mistaken for it). The command line is that of the
# program itself once it has exec'd; a wrapper shell that has not yet exec'd does not match.
proc_pid() {
  local f="$1" pattern="$2" pid
  [ -f "$f" ] || return 1
  pid=$(cat "$f" 2>/dev/null) || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$pattern" || return 1
  echo "$pid"
}

# proc_launch LOG PIDFILE PROGRAM ARGS...: starts PROGRAM in its own session (Ctrl-C in the
# calling terminal does not reach it), output to LOG, pid to PIDFILE. `exec` keeps the pid
# the program's own.
proc_launch() {
  local log="$1" pidfile="$2"; shift 2
  mkdir -p "$(dirname "$log")" "$(dirname "$pidfile")"
  setsid "$@" >"$log" 2>&1 </dev/null &
  echo $! >"$pidfile"
}

# proc_wait_exec PIDFILE PATTERN SECONDS: waits until the launched process has exec'd into the
# program (its command line matches PATTERN); fails if it died first. setsid forks before it
# execs, so right after the launch /proc/PID/cmdline may still be the shell's.
proc_wait_exec() {
  local f="$1" pattern="$2" secs="$3" pid deadline
  pid=$(cat "$f")
  deadline=$(($(now_ms) + secs * 1000))
  while ! proc_pid "$f" "$pattern" >/dev/null; do
    [ -d "/proc/$pid" ] || return 1
    grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null && return 1
    [ "$(now_ms)" -lt "$deadline" ] || return 1
    sleep 0.05
  done
}

# proc_stop NAME PIDFILE PATTERN [SECONDS]: SIGTERM, up to SECONDS (10), then SIGKILL; removes
# the pid file. Prints what it stopped on stderr, prefixed by NAME.
proc_stop() {
  local name="$1" f="$2" pattern="$3" secs="${4:-10}" pid i
  if pid=$(proc_pid "$f" "$pattern"); then
    kill -CONT "$pid" 2>/dev/null || true
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < secs * 10; i++)); do
      [ -d "/proc/$pid" ] || break
      # A zombie (not reaped by our parent) counts as stopped.
      grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null && break
      sleep 0.1
    done
    if [ -d "/proc/$pid" ] && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null; then
      echo "$name: pid $pid ignored SIGTERM for ${secs} s; sending SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
    echo "$name: stopped (pid $pid)" >&2
  fi
  rm -f "$f"
}
