#!/bin/sh
# Entry point of the "dovecot" service in docker/compose.yml: one user (demo,
# password demo) with a welcome message, then Dovecot in the foreground.
set -eu
here=$(dirname "$0")
passwd=${DOVECOT_PASSWD:-/etc/dovecot/popgate-demo.passwd}
mail=${DOVECOT_MAIL:-/var/mail}

printf 'demo:{PLAIN}demo\n' >"$passwd"
chmod 644 "$passwd"
md=$mail/demo/Maildir
if [ ! -d "$md" ]; then
  mkdir -p "$md/cur" "$md/new" "$md/tmp"
  cat >"$md/new/1700000001.M1P1.popgate-demo" <<'MSG'
From: popgate demo <postmaster@example.org>
To: demo@example.org
Subject: Welcome
Date: Thu, 26 Nov 2026 10:00:00 +0000
Message-ID: <welcome@popgate-demo>

This message came from Dovecot through popgate.
.A line that starts with a dot.
MSG
  chown -R 8:8 "$mail/demo"
fi
exec /usr/sbin/dovecot -F -c "${DOVECOT_CONF:-$here/dovecot.conf}"
