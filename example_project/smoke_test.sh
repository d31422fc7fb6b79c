#!/usr/bin/env bash
# End-to-end check of the example site, run by .ci/run: start it the way the README's
# first command does (rundemo), post a signed sample webhook with the app's own
# send_sample_webhook (over HTTP, --url), and require that the
# conversation was stored and linked to the staying-now booking. A forged one must
# get 403. Usage: smoke_test.sh [python]
set -euo pipefail
PY=${1:-python3}
cd "$(dirname "$0")"
work=$(mktemp -d)
export DATABASE_URL="sqlite:///$work/example.sqlite3"
port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port/twilio/webhook/"

"$PY" manage.py rundemo "127.0.0.1:$port" >"$work/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 60); do
    curl -fsS -o /dev/null -I "$url" 2>/dev/null && break
    sleep 0.5
done

"$PY" manage.py send_sample_webhook --url "$url"
"$PY" manage.py send_sample_webhook --url "$url" --wrong-signature  # fails unless 403
"$PY" manage.py shell -c '
from messaging.models import TwilioConversation
# Alice'"'"'s, which the sample webhook started (load_demo_inbox made the others).
c = TwilioConversation.objects.get(is_group_chat=False, customer_phone="+14155550142")
others = TwilioConversation.objects.exclude(pk=c.pk).filter(is_group_chat=False).count()
assert others == 4, f"the demo inbox has {others} other conversations, not 4"
assert c.booking is not None, "conversation not linked"
assert c.booking.start_date <= __import__("datetime").date.today() <= c.booking.end_date, c.booking
assert c.apartment == c.booking.apartment and c.link_method == "automatic"
assert c.messages.count() == 1
g = c.group_chat
assert g is not None and g.is_group_chat and g.booking == c.booking, "no group chat"
assert c.messages.get().forward_state == "sent" and g.messages.get().author == "ASSISTANT"
# The inbox a manager opens: Alice waits for a reply, and the booking names her, in
# a few queries (the booking'"'"'s tenant and apartment come with the list'"'"'s query).
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
admin = Client(HTTP_HOST="127.0.0.1")
admin.force_login(get_user_model().objects.get(username="admin"))
with CaptureQueriesContext(connection) as queries:
    page = admin.get("/admin/messaging/twilioconversation/")
html = page.content.decode()
assert page.status_code == 200 and "Waiting" in html and str(c.booking) in html, page.status_code
assert len(queries) <= 12, f"the inbox took {len(queries)} queries"
print(f"example site ok: {c.conversation_sid} linked to {c.booking} ({c.link_method}); "
      f"group chat {g.conversation_sid} got the forward")
'
