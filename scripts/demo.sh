#!/usr/bin/env bash
# popgate demo: a real Dovecot with three messages, popgate in front of it,
# and real POP3 clients (fetchmail, mpop, curl) fetching the mail through
# popgate. Everything lives in a temporary directory and is stopped and
# removed on exit. Run by `make demo` (which installs the packages with
# scripts/deps.sh and builds build/popgate first); runs as root, because the
# demo Dovecot is started as root with its own base_dir.
#
# Environment:
#   POPGATE_BIN       popgate binary (default: build/popgate)
#   POPGATE_NO_PROXY  1 = skip popgate and point the clients at Dovecot
#                     directly (to check this script without the daemon)
#   DEMO_KEEP         1 = keep the temporary directory (its path is printed)
#
# Layout of the temporary directory:
#   dovecot/   dovecot.conf, passwd, run/ (base_dir), dovecot.log
#   mail/demo/Maildir   the mailbox (owned by uid/gid 8, "mail")
#   orig/      the three sample messages as written to the maildir
#   popgate/   popgate.ini, popgate.log
#   fetchmail/ mpop/    what each client fetched (one file per message)
#
# Adding a feature (TLS, ClamAV) = one more listener/filter section in
# write_popgate_conf, one more fetch_* function, and a call in main.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
POPGATE_BIN=${POPGATE_BIN:-build/popgate}
NO_PROXY=${POPGATE_NO_PROXY:-0}
DEMO_USER=demo
DEMO_PASS=demo
MAIL_UID=8 # "mail" on Debian
MAIL_GID=8

PIDS=()   # processes this script started, stopped in reverse order
DIR=""

# ---------------------------------------------------------------- output --

section() { printf '\n== %s\n' "$*"; }
info() { printf '   %s\n' "$*"; }
indent() { sed 's/^/   | /'; }
die() {
  printf 'demo: error: %s\n' "$*" >&2
  exit 1
}

# --------------------------------------------------------------- helpers --

# Stop what we started, by PID, newest first; then remove the temp dir.
cleanup() {
  local rc=$? i pid n
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    pid=${PIDS[i]}
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for ((n = 0; n < 50; n++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  if [[ -n $DIR && -d $DIR ]]; then
    if [[ ${DEMO_KEEP:-0} == 1 ]]; then
      printf '\n(kept %s)\n' "$DIR"
    else
      rm -rf "$DIR"
    fi
  fi
  exit "$rc"
}

# A TCP port that was free a moment ago on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_port PORT PID NAME: up to 10 s for a listener; fail early if PID died.
# Asks the kernel (ss) rather than connecting, so that no probe session shows
# up in the logs.
wait_port() {
  local port=$1 pid=$2 name=$3 n
  for ((n = 0; n < 100; n++)); do
    if [[ -n $(ss -Hltn "sport = :$port" 2>/dev/null) ]]; then
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || die "$name exited during start-up"
    sleep 0.1
  done
  die "$name is not listening on 127.0.0.1:$port after 10 s"
}

# ------------------------------------------------------------ the mailbox --

# Three messages: plain text, one whose body has lines starting with "."
# (dot-stuffed on the wire: "..", ".", "...": must come back unchanged), and
# a small MIME message with an attachment.
write_messages() {
  mkdir -p "$DIR/orig"
  cat >"$DIR/orig/1.eml" <<'EOF'
From: Alice <alice@example.org>
To: Demo <demo@example.org>
Subject: Welcome to popgate
Date: Thu, 26 Nov 2026 10:00:00 +0000
Message-ID: <demo-1@example.org>

Hello,

this message went from Dovecot through popgate to your client.
EOF
  cat >"$DIR/orig/2.eml" <<'EOF'
From: Bob <bob@example.org>
To: Demo <demo@example.org>
Subject: Lines that start with a dot
Date: Thu, 26 Nov 2026 10:01:00 +0000
Message-ID: <demo-2@example.org>

The next lines start with dots; POP3 stuffs them on the wire.
.
..
.hidden
...three dots
. space after a dot
Last line.
EOF
  cat >"$DIR/orig/3.eml" <<'EOF'
From: Carol <carol@example.org>
To: Demo <demo@example.org>
Subject: A small attachment
Date: Thu, 26 Nov 2026 10:02:00 +0000
Message-ID: <demo-3@example.org>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="b1"

--b1
Content-Type: text/plain; charset=utf-8

The attachment is a short text file.

--b1
Content-Type: text/plain; name="notes.txt"
Content-Disposition: attachment; filename="notes.txt"
Content-Transfer-Encoding: base64

cG9wZ2F0ZSBkZW1vOiB0aGlzIGlzIHRoZSBhdHRhY2htZW50Lgo=
--b1--
EOF
  # Two infected messages: the EICAR test string in the body, and the
  # ClamAV test program clam.exe zipped in an attachment.
  local eicar='X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*'
  cat >"$DIR/orig/4.eml" <<EOF
From: Mallory <mallory@example.net>
To: Demo <demo@example.org>
Subject: Invoice (EICAR test)
Date: Thu, 26 Nov 2026 10:03:00 +0000
Message-ID: <demo-4@example.org>

$eicar
EOF
  {
    cat <<'EOF'
From: Mallory <mallory@example.net>
To: Demo <demo@example.org>
Subject: Your parcel (clam.exe in a zip)
Date: Thu, 26 Nov 2026 10:04:00 +0000
Message-ID: <demo-5@example.org>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="b2"

--b2
Content-Type: text/plain

Open the attachment.

--b2
Content-Type: application/zip; name="parcel.zip"
Content-Disposition: attachment; filename="parcel.zip"
Content-Transfer-Encoding: base64

EOF
    base64 /usr/share/clamav-testfiles/clam.zip
    printf -- '--b2--\n'
  } >"$DIR/orig/5.eml"
  local md=$DIR/mail/$DEMO_USER/Maildir i
  mkdir -p "$md/cur" "$md/new" "$md/tmp"
  for i in 1 2 3 4 5; do
    # Unique maildir names; the time stamp orders them 1, 2, 3.
    cp "$DIR/orig/$i.eml" "$md/new/$((1700000000 + i)).M${i}P$$.demo"
  done
  chown -R "$MAIL_UID:$MAIL_GID" "$DIR/mail"
}

# -------------------------------------------------------------- Dovecot --

write_dovecot_conf() {
  mkdir -p "$DIR/dovecot/run"
  printf '%s:{PLAIN}%s\n' "$DEMO_USER" "$DEMO_PASS" >"$DIR/dovecot/passwd"
  chmod 644 "$DIR/dovecot/passwd"
  cat >"$DIR/dovecot/dovecot.conf" <<EOF
# Generated by scripts/demo.sh: a throw-away POP3 server on 127.0.0.1.
protocols = pop3
listen = 127.0.0.1
base_dir = $DIR/dovecot/run
state_dir = $DIR/dovecot/run/state
log_path = $DIR/dovecot/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = $MAIL_UID
first_valid_gid = $MAIL_GID
mail_location = maildir:~/Maildir
pop3_uidl_format = %08Xu%08Xv
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $DIR/dovecot/passwd
}
userdb {
  driver = static
  args = uid=$MAIL_UID gid=$MAIL_GID home=$DIR/mail/%u
}
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = $DOVECOT_PORT
  }
  inet_listener pop3s {
    port = 0
  }
}
service anvil {
  chroot =
}
EOF
}

start_dovecot() {
  /usr/sbin/dovecot -F -c "$DIR/dovecot/dovecot.conf" \
    >>"$DIR/dovecot/dovecot.log" 2>&1 &
  PIDS+=($!)
  DOVECOT_PID=$!
  wait_port "$DOVECOT_PORT" "$DOVECOT_PID" dovecot
  info "Dovecot $(/usr/sbin/dovecot --version | cut -d' ' -f1)" \
    "pid $DOVECOT_PID on 127.0.0.1:$DOVECOT_PORT (user $DEMO_USER, 3 messages)"
}

# -------------------------------------------------------------- popgate --

# A signature database made on the spot (no download): the MD5 of ClamAV's
# test program clam.exe and the EICAR test string.
make_signatures() {
  local d=$DIR/sigs
  mkdir -p "$d" "$DIR/quarantine" "$DIR/spool"
  sigtool --md5 /usr/share/clamav-testfiles/clam.exe >"$d/clam.hdb" 2>/dev/null ||
    die "sigtool could not make the signature database"
  printf 'Eicar-Test-Signature:0:*:%s\n' "$(printf '%s' \
    'X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*' |
    od -An -tx1 | tr -d ' \n')" >"$d/eicar.ndb"
  info "signatures: $d (clam.exe by MD5, EICAR)"
}

# A test CA and a certificate for pop.test / 127.0.0.1, made for this run.
make_certs() {
  local d=$DIR/certs
  mkdir -p "$d"
  (
    cd "$d"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -keyout ca.key -out ca.pem -days 1 -subj "/CN=popgate demo CA"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -keyout pop.key -out pop.csr -subj /CN=pop.test
    printf 'subjectAltName=DNS:pop.test,IP:127.0.0.1\n' >pop.ext
    openssl x509 -req -in pop.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
      -days 1 -extfile pop.ext -out pop.pem
  ) >"$d/openssl.log" 2>&1 || die "openssl could not make the demo certificates"
  info "certificates: $d/ca.pem (test CA), pop.pem (pop.test, 127.0.0.1)"
}

write_popgate_conf() {
  mkdir -p "$DIR/popgate"
  cat >"$DIR/popgate/popgate.ini" <<EOF
; Generated by scripts/demo.sh.
[popgate]
workers = 1
log = $DIR/popgate/popgate.log
log_level = info
shutdown_timeout = 5s
spool_dir = $DIR/spool

[listener:plain]
bind = 127.0.0.1:$PROXY_PORT
tls = off
upstream = dovecot

[listener:pop3s]
bind = 127.0.0.1:$TLS_PORT
tls = implicit
cert = $DIR/certs/pop.pem
key = $DIR/certs/pop.key
upstream = dovecot
filters = av

[listener:stls]
bind = 127.0.0.1:$STLS_PORT
tls = starttls
cert = $DIR/certs/pop.pem
key = $DIR/certs/pop.key
require_tls = yes
upstream = dovecot
filters = av

[filter:av]
type = clamav
database = $DIR/sigs
on_virus = replace
quarantine_dir = $DIR/quarantine
on_error = tempfail

[upstream:dovecot]
server = 127.0.0.1:$DOVECOT_PORT
tls = off
EOF
}

start_popgate() {
  if [[ $NO_PROXY == 1 ]]; then
    PROXY_PORT=$DOVECOT_PORT
    info "POPGATE_NO_PROXY=1: popgate skipped, clients talk to Dovecot directly"
    return
  fi
  write_popgate_conf
  info "config $DIR/popgate/popgate.ini:"
  grep -v '^;' "$DIR/popgate/popgate.ini" | grep -v '^$' | indent
  local out
  if ! out=$("$POPGATE_BIN" -t -c "$DIR/popgate/popgate.ini" 2>&1); then
    printf '%s\n' "$out" | indent
    die "popgate -t rejected the generated config"
  fi
  info "popgate -t -c popgate.ini: ${out:-OK}"
  "$POPGATE_BIN" -c "$DIR/popgate/popgate.ini" \
    >>"$DIR/popgate/popgate.stderr" 2>&1 &
  PIDS+=($!)
  POPGATE_PID=$!
  wait_port "$PROXY_PORT" "$POPGATE_PID" popgate
  info "popgate pid $POPGATE_PID: plain :$PROXY_PORT, POP3S :$TLS_PORT," \
    "STLS :$STLS_PORT -> Dovecot 127.0.0.1:$DOVECOT_PORT"
}

# -------------------------------------------------------------- clients --

# compare DIR: every fetched message must equal its original byte for byte
# (both sides with LF line ends: the clients store what POP3's CRLF encodes).
# The fetched files are matched to the originals by their Message-ID.
compare() {
  local got=$1 f id orig ok=0 bad=0 caught=0 q
  for f in "$got"/*; do
    [[ -f $f ]] || continue
    id=$(grep -m1 -i '^Message-ID:' "$f" | sed 's/.*<demo-\([0-9]*\)@.*/\1/')
    orig=$DIR/orig/$id.eml
    if [[ $NO_PROXY != 1 && ($id == 4 || $id == 5) ]]; then
      # Infected: a notice in its place, the original in quarantine.
      q=$(sed -n 's/^ *Quarantine: *//p' "$f" | tr -d '\r')
      if grep -q '^X-Virus-Status: infected; ' "$f" && [[ -n $q ]] &&
        tr -d '\r' <"$DIR/quarantine/${q%%-*}/$q.eml" | cmp -s - "$orig"; then
        info "$(basename "$orig"): replaced by a notice" \
          "($(grep -m1 '^X-Virus-Status:' "$f" | tr -d '\r'));" \
          "the original is in quarantine as $q, identical"
        caught=$((caught + 1))
      else
        info "$(basename "$f"): infected message NOT handled as expected:"
        indent <"$f"
        bad=$((bad + 1))
      fi
      continue
    fi
    if [[ -f $orig ]] && diff -u "$orig" "$f" >"$f.diff"; then
      info "$(basename "$orig"): identical ($(wc -c <"$f") bytes," \
        "subject: $(grep -m1 '^Subject:' "$f" | cut -c10-))"
      ok=$((ok + 1))
      rm -f "$f.diff"
    else
      info "$(basename "$f"): DIFFERS from ${orig:-any original}:"
      indent <"$f.diff"
      bad=$((bad + 1))
    fi
  done
  local want_ok=3 want_caught=2
  if [[ $NO_PROXY == 1 ]]; then
    want_ok=5
    want_caught=0
  fi
  info "result: $ok clean and identical, $caught infected and replaced," \
    "$bad wrong (of 5)"
  [[ $ok -eq $want_ok && $caught -eq $want_caught && $bad -eq 0 ]]
}

fetch_curl_list() {
  section "curl: LIST through $PROXY_NAME, POP3S (implicit TLS, verified)"
  local url=pop3s://pop.test:$TLS_PORT tls=(--cacert "$DIR/certs/ca.pem"
    --resolve "pop.test:$TLS_PORT:127.0.0.1")
  if [[ $NO_PROXY == 1 ]]; then
    url=pop3://127.0.0.1:$PROXY_PORT
    tls=()
  fi
  info "curl --cacert ca.pem -u $DEMO_USER:*** $url/"
  curl -sS --max-time 20 "${tls[@]}" -u "$DEMO_USER:$DEMO_PASS" "$url/" |
    tr -d '\r' | indent
  info "curl ... $url/2  (RETR 2, the dot lines):"
  curl -sS --max-time 20 "${tls[@]}" -u "$DEMO_USER:$DEMO_PASS" "$url/2" |
    tr -d '\r' | sed -n '/^$/,$p' | indent
  if [[ $NO_PROXY != 1 ]]; then
    info "a raw client on the STLS port: CAPA, then USER in the clear (refused):"
    printf 'CAPA\r\nUSER %s\r\nQUIT\r\n' "$DEMO_USER" |
      timeout 10 python3 -c '
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(sys.stdin.buffer.read())
data = b""
while True:
    d = s.recv(4096)
    if not d:
        break
    data += d
sys.stdout.write(data.decode().replace("\r", ""))' "$STLS_PORT" | indent
  fi
}

# fetchmail, one message per file through an MDA; "keep" leaves the mail on
# the server so that the next client sees it too; "invisible" stops fetchmail
# from adding its Received: header, so the result can be diffed.
fetch_fetchmail() {
  local d=$DIR/fetchmail tls='sslproto ""' port=$PROXY_PORT
  if [[ $NO_PROXY != 1 ]]; then
    port=$TLS_PORT
    tls="ssl sslcertck sslcertfile \"$DIR/certs/ca.pem\" sslcommonname pop.test"
    section "fetchmail: RETR all through $PROXY_NAME, POP3S (certificate checked)"
  else
    section "fetchmail: RETR all through $PROXY_NAME"
  fi
  mkdir -p "$d/out"
  cat >"$d/fetchmailrc" <<EOF
set no syslog
set invisible
poll 127.0.0.1 service $port protocol pop3 timeout 30
  user "$DEMO_USER" password "$DEMO_PASS" is "root" here
  keep fetchall no rewrite $tls
  mda "/bin/sh -c 'cat > $d/out/msg.\$\$'"
EOF
  chmod 600 "$d/fetchmailrc"
  local rc=0
  FETCHMAILHOME=$d timeout 60 fetchmail -f "$d/fetchmailrc" --nodetach \
    --nosyslog >"$d/fetchmail.log" 2>&1 || rc=$?
  grep -v 'Running as root is discouraged' "$d/fetchmail.log" | indent
  [[ $rc -eq 0 ]] || die "fetchmail exited with $rc"
  compare "$d/out"
}

# mpop pipelines its commands when the server offers PIPELINING.
fetch_mpop() {
  local d=$DIR/mpop port=$PROXY_PORT tls=(--tls=off)
  if [[ $NO_PROXY != 1 ]]; then
    port=$STLS_PORT
    tls=(--tls=on --tls-starttls=on --tls-trust-file="$DIR/certs/ca.pem")
    section "mpop: RETR all through $PROXY_NAME, STLS (verified, pipelined)"
  else
    section "mpop: RETR all through $PROXY_NAME (pipelined)"
  fi
  mkdir -p "$d/out/cur" "$d/out/new" "$d/out/tmp"
  local rc=0
  timeout 60 mpop --half-quiet --host=127.0.0.1 --port="$port" "${tls[@]}" \
    --auth=user --user="$DEMO_USER" --passwordeval="echo $DEMO_PASS" \
    --keep=on --only-new=off --received-header=off \
    --delivery="maildir,$d/out" --uidls-file="$d/uidls" \
    --timeout=30 >"$d/mpop.log" 2>&1 || rc=$?
  indent <"$d/mpop.log"
  [[ $rc -eq 0 ]] || die "mpop exited with $rc"
  compare "$d/out/new"
}

show_logs() {
  if [[ $NO_PROXY == 1 ]]; then
    return
  fi
  section "popgate log ($DIR/popgate/popgate.log)"
  if [[ -s $DIR/popgate/popgate.log ]]; then
    indent <"$DIR/popgate/popgate.log"
  else
    info "(empty)"
  fi
  if [[ -s $DIR/popgate/popgate.stderr ]]; then
    info "stderr:"
    indent <"$DIR/popgate/popgate.stderr"
  fi
}

stop_popgate() {
  [[ -n ${POPGATE_PID:-} ]] || return 0
  kill -TERM "$POPGATE_PID" 2>/dev/null || return 0
  local n rc=0
  for ((n = 0; n < 100; n++)); do
    kill -0 "$POPGATE_PID" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$POPGATE_PID" 2>/dev/null; then
    kill -KILL "$POPGATE_PID" 2>/dev/null || true
    info "popgate still running 10 s after SIGTERM: killed"
  fi
  wait "$POPGATE_PID" || rc=$?
  info "popgate stopped on SIGTERM, exit status $rc"
}

# ----------------------------------------------------------------- main --

main() {
  [[ $(id -u) -eq 0 ]] || die "run as root (the demo Dovecot runs as root)"
  if [[ $NO_PROXY != 1 ]]; then
    [[ -x $POPGATE_BIN ]] || die "$POPGATE_BIN not found: run 'make' first"
  fi
  local tool
  for tool in /usr/sbin/dovecot fetchmail mpop curl python3 openssl sigtool; do
    command -v "$tool" >/dev/null || die "$tool missing: run scripts/deps.sh"
  done

  trap cleanup EXIT
  trap 'exit 130' INT TERM
  DIR=$(mktemp -d /tmp/popgate-demo.XXXXXX)
  # Dovecot's mail processes (uid 8) and auth (user dovecot) walk into it.
  chmod 755 "$DIR"
  DOVECOT_PORT=$(free_port)
  PROXY_PORT=$(free_port)
  TLS_PORT=$(free_port)
  STLS_PORT=$(free_port)
  PROXY_NAME=popgate
  [[ $NO_PROXY == 1 ]] && PROXY_NAME="Dovecot (no proxy)"

  section "popgate demo in $DIR"
  if [[ $NO_PROXY != 1 ]]; then
    "$POPGATE_BIN" -V 2>&1 | indent || true
  fi

  section "start Dovecot and popgate"
  write_messages
  make_signatures
  make_certs
  write_dovecot_conf
  start_dovecot
  start_popgate

  local failed=0
  fetch_curl_list
  fetch_fetchmail || failed=1
  fetch_mpop || failed=1

  section "stop"
  stop_popgate
  show_logs

  section "summary"
  if [[ $failed -eq 0 ]]; then
    if [[ $NO_PROXY == 1 ]]; then
      info "OK: fetchmail and mpop each fetched the 5 messages from Dovecot"
    else
      info "OK: through popgate (TLS, ClamAV), fetchmail and mpop each got" \
        "the 3 clean messages identical to the originals and a notice for" \
        "each of the 2 infected ones, whose originals are in quarantine"
      info "quarantine: $(find "$DIR/quarantine" -name '*.eml' | wc -l) files" \
        "under $DIR/quarantine/YYYYMMDD/"
    fi
  else
    info "FAILED: some fetched messages differ (see above)"
  fi
  return "$failed"
}

main "$@"
